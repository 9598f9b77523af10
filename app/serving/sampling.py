"""Shared wire -> engine conversions: sampling fields, token caps, model names, usage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from app.engine.errors import ModelNotFound
from app.engine.types import FinishReason, ModelInfo, SamplingParams, Timings, TokenLogprob, Usage
from app.schemas.common import (
    CompletionUsage,
    FinishReasonWire,
    PromptTokensDetails,
    SamplingRequest,
)
from app.serving.context import ContextOverflow
from app.serving.errors import GenerationFailed, RequestCancelled
from app.serving.structured import response_grammar

T = TypeVar("T")


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


def check_model_name(name: str, info: ModelInfo, limits: Limits) -> None:
    """Raise ``ModelNotFound`` unless ``name`` (any case) is the served model's id, its file
    name or stem, or one of ``limits.model_aliases``."""
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


def sampling_params(body: SamplingRequest, cap: int | None) -> SamplingParams:
    """Engine sampling settings from the request's fields (unset fields keep the defaults)."""
    defaults = SamplingParams()
    return SamplingParams(
        temperature=_pick(body.temperature, defaults.temperature),
        top_k=_pick(body.top_k, defaults.top_k),
        top_p=_pick(body.top_p, defaults.top_p),
        min_p=_pick(body.min_p, defaults.min_p),
        repeat_penalty=_pick(body.repeat_penalty, defaults.repeat_penalty),
        presence_penalty=_pick(body.presence_penalty, defaults.presence_penalty),
        frequency_penalty=_pick(body.frequency_penalty, defaults.frequency_penalty),
        seed=body.seed,
        logit_bias={int(token): bias for token, bias in (body.logit_bias or {}).items()},
        max_tokens=cap,
        stop=body.stop_list(),
        ignore_eos=bool(body.ignore_eos),
        grammar=response_grammar(body),
        logprobs=body.logprobs_wanted(),
    )


def _pick(value: T | None, default: T) -> T:
    return default if value is None else value


def wire_usage(usage: Usage) -> CompletionUsage:
    """OpenAI's usage object from the engine's."""
    return CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_prompt_tokens),
    )


def wire_finish_reason(reason: FinishReason, error: str | None) -> FinishReasonWire:
    """OpenAI's finish_reason; an engine error or a cancellation is raised instead."""
    if reason is FinishReason.STOP:
        return "stop"
    if reason is FinishReason.LENGTH:
        return "length"
    if reason is FinishReason.CANCELLED:
        # Only a stopping engine cancels a request that someone still reads.
        raise RequestCancelled("server shutting down: the request was ended before it finished.")
    raise GenerationFailed(error or "The engine failed while generating.")


@dataclass(frozen=True)
class Finished:
    """The end of a generation, as the wire sees it."""

    reason: FinishReasonWire
    usage: Usage
    timings: Timings | None
    logprobs: tuple[TokenLogprob, ...] = ()  # of tokens whose text came with no later piece
