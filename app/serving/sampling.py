"""Shared wire -> engine conversions: sampling fields, token caps, model names, usage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from app.engine.errors import InvalidRequest, ModelNotFound
from app.engine.types import FinishReason, ModelInfo, SamplingParams, Timings, Usage
from app.schemas.common import (
    CompletionUsage,
    FinishReasonWire,
    PromptTokensDetails,
    SamplingRequest,
)
from app.serving.errors import GenerationFailed, RequestCancelled

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """The settings the serving layer needs (kept small so tests can build one)."""

    max_tokens_limit: int
    default_max_tokens: int | None
    system_prompt: str


def served_model_name(requested: str | None, info: ModelInfo) -> str:
    """The served model id; raises ``ModelNotFound`` for a name that is not this model.

    Accepts the served id (alias, else file stem), the file name and no name at all.
    """
    if requested is None or requested in _accepted_names(info):
        return info.name
    raise ModelNotFound(
        f"The model '{requested}' does not exist on this server; it serves '{info.name}'.",
        param="model",
    )


def _accepted_names(info: ModelInfo) -> set[str]:
    path = Path(info.path)
    return {info.name, path.name, path.stem}


def max_tokens(requested: int | None, limits: Limits, *, param: str = "max_tokens") -> int | None:
    """The generation cap: the request's (at most the configured limit), else the default."""
    if requested is not None and requested > limits.max_tokens_limit:
        raise InvalidRequest(
            f"{param} is {requested}, but this server allows at most {limits.max_tokens_limit}.",
            param=param,
        )
    return requested if requested is not None else limits.default_max_tokens


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
        raise RequestCancelled("The request was cancelled by the server (it may be shutting down).")
    raise GenerationFailed(error or "The engine failed while generating.")


@dataclass(frozen=True)
class Finished:
    """The end of a generation, as the wire sees it."""

    reason: FinishReasonWire
    usage: Usage
    timings: Timings | None
