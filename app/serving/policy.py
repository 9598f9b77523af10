"""Serving policy every route family applies: the limits from settings, model names, token caps.

``Limits`` is the slice of the settings the serving layer needs (kept small so tests can build
one). Model-name checks and the generation cap are the same rules on every route family.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from app.engine.types import LoraAdapter, LoraScale, ModelInfo
from app.errors import ModelNotFound
from app.serving.context import ContextOverflow
from app.serving.schema_check import SchemaPolicy


@dataclass(frozen=True)
class Limits:
    """The settings the serving layer needs (kept small so tests can build one)."""

    max_tokens_limit: int | None = None  # None: what the slot context holds
    default_max_tokens: int | None = None  # OpenAI requests that set no max_tokens
    cria_max_tokens: int = 256  # CRIA's {"prompt"} contract cannot send a cap
    system_prompt: str = ""  # CRIA's contract only; OpenAI chats are sent as they are
    model_aliases: frozenset[str] = frozenset()  # more names of the served model (lower case)
    strict_model_names: bool = False
    context_overflow: ContextOverflow = "truncate"  # or "error": a 400 when a chat is too long
    tool_call_format: str = "auto"  # a tool_formats name, or detected from the template
    reasoning_format: str = "auto"  # "none": reasoning stays in the content
    reasoning_budget: int | None = None  # thinking tokens before the block is closed
    schemas: SchemaPolicy = field(default_factory=SchemaPolicy)  # --strict-schemas, --json-max-*
    parse_special_in_content: bool = False  # message contents' <|im_end|> as control tokens


def served_model_name(requested: str | None, info: ModelInfo, limits: Limits) -> str:
    """The served model id, which answers whatever ``model`` a client names.

    A single-model server serves every request with the loaded model (clients send
    placeholders such as ``gpt-3.5-turbo`` or ``tgi``). With ``strict_model_names`` a name
    that is not the served id, its file name or one of ``limits.model_aliases`` (the
    ``--model`` reference, such as ``smollm2``) raises ``ModelNotFound``.
    """
    if requested is not None and limits.strict_model_names:
        check_model_name(requested, info, limits)
    return info.name


@dataclass(frozen=True)
class ModelChoice:
    """What a request's model names resolve to: the id its response names, and the LoRA
    adapters it runs under (none: the base model)."""

    name: str
    lora: tuple[LoraScale, ...] = ()


def find_adapter(name: str, info: ModelInfo) -> LoraAdapter | None:
    """The LoRA adapter served under ``name`` (any case), if there is one."""
    key = name.strip().lower()
    return next((a for a in info.adapters if a.name.lower() == key), None)


def choose_model(
    requested: str | None,
    info: ModelInfo,
    limits: Limits,
    lora: Iterable[tuple[int, float | None]] = (),
) -> ModelChoice:
    """The model a generation runs on: a LoRA adapter when ``requested`` names one (on the
    base model), else the served model (see ``served_model_name``).

    ``lora`` is llama-server's per-request list, (id, scale) pairs; they apply on top of the
    named adapter (an id in both takes the list's scale).
    """
    extra = tuple(LoraScale(i, s) for i, s in lora)
    adapter = find_adapter(requested, info) if requested is not None else None
    if adapter is not None:
        return ModelChoice(adapter.name, (LoraScale(adapter.id), *extra))
    return ModelChoice(served_model_name(requested, info, limits), extra)


def check_model_name(name: str, info: ModelInfo, limits: Limits) -> None:
    """Raise ``ModelNotFound`` unless ``name`` (any case) is the served model's id, its file
    name or stem, one of ``limits.model_aliases`` or a LoRA adapter's name."""
    if find_adapter(name, info) is not None:
        return
    path = Path(info.path)
    names = {n.lower() for n in (info.name, path.name, path.stem)} | limits.model_aliases
    if name.strip().lower() not in names:
        raise ModelNotFound(
            f"The model '{name}' does not exist on this server; it serves '{info.name}'.",
            param="model",
        )


def max_tokens(
    requested: int | None, limits: Limits, info: ModelInfo, *, default: int | None
) -> int | None:
    """The generation cap: the request's, else ``default``, clamped to what fits.

    A cap above ``max_tokens_limit`` or the slot context is clamped (as llama-server does),
    not refused: the reply ends with finish_reason ``length`` when it reaches the cap or
    fills the slot. Values below 1 never get here (the wire schemas refuse them with a 400).
    None means "until the slot is full".
    """
    cap = requested if requested is not None else default
    ceilings = [c for c in (limits.max_tokens_limit, info.n_ctx_slot) if c is not None]
    if cap is None:
        return limits.max_tokens_limit
    return min(cap, *ceilings)
