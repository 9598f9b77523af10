"""Sampling settings from a request's wire fields (OpenAI-style names, shared by the families)."""

from __future__ import annotations

from typing import TypeVar

from app.engine.types import ModelInfo, SamplingParams
from app.schemas.common import SamplingRequest
from app.serving.policy import Limits, ModelChoice, choose_model
from app.serving.schema_check import SchemaPolicy
from app.serving.structured import response_grammar

T = TypeVar("T")


def sampling_params(
    body: SamplingRequest, cap: int | None, schemas: SchemaPolicy | None = None
) -> SamplingParams:
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
        grammar=response_grammar(body, schemas),
        logprobs=body.logprobs_wanted(),
    )


def _pick(value: T | None, default: T) -> T:
    return default if value is None else value


def model_choice(body: SamplingRequest, info: ModelInfo, limits: Limits) -> ModelChoice:
    """The model (or LoRA adapter) the request names, with llama-server's ``lora`` list."""
    lora = [(entry.id, entry.scale) for entry in body.lora or ()]
    return choose_model(body.model, info, limits, lora)
