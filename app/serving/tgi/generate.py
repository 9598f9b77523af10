"""TGI's ``/generate``, ``/generate_stream`` and ``/``: wire request -> engine request, events ->
TGI's answer and SSE token events.

TGI prompts the model with ``inputs`` as they are (no chat template). Sampling follows TGI:
greedy unless ``do_sample`` or a temperature/top_k/top_p is given. ``grammar`` of type
``json`` (a JSON Schema, as an object or as JSON text) constrains the reply through the
grammar sampler; ``regex`` grammars get a 400. ``finish_reason`` is
``length`` or ``eos_token`` (the engine does not say whether a stop string or the model's end
token ended a reply, so ``stop_sequence`` is not reported). ``logprob`` is null. Parameters
this server cannot honour (best_of > 1, top_n_tokens, decoder_input_details,
truncate, typical_p, watermark, adapters) get a 400 naming them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from app.engine.types import GenerationRequest, Grammar, ModelInfo, SamplingParams, TokenEvent
from app.errors import GenerationFailed, InvalidRequest
from app.limits import check_stops
from app.schemas.common import MAX_STOP_SEQUENCES
from app.schemas.tgi import (
    TgiDetails,
    TgiFinishReason,
    TgiGenerateRequest,
    TgiGenerateResponse,
    TgiInfo,
    TgiParameters,
    TgiStreamDetails,
    TgiStreamEvent,
    TgiToken,
)
from app.serving.generation import Finished, FinishSink, wire_finish_reason
from app.serving.policy import Limits, max_tokens
from app.serving.schema_check import SchemaPolicy, unreported
from app.serving.structured import json_grammar

TGI_VERSION = "3.0.0"  # the TGI release whose API these routes follow


@dataclass(frozen=True)
class TgiPlan:
    """A validated generate request and how to answer it."""

    request: GenerationRequest
    inputs: str
    details: bool
    return_full_text: bool


def _unsupported(params: TgiParameters) -> list[str]:
    checks = {
        "best_of": params.best_of not in (None, 1),
        "top_n_tokens": bool(params.top_n_tokens),
        "decoder_input_details": bool(params.decoder_input_details),
        "truncate": params.truncate is not None,
        "typical_p": params.typical_p is not None,
        "watermark": bool(params.watermark),
        "adapter_id": params.adapter_id is not None,
    }
    return [name for name, used in checks.items() if used]


def tgi_sampling(params: TgiParameters, limits: Limits, info: ModelInfo) -> SamplingParams:
    """Engine sampling settings from TGI's parameters."""
    stops = tuple(stop for stop in params.stop or () if stop)
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(
            f"parameters.stop: at most {MAX_STOP_SEQUENCES} stop sequences are allowed.",
            param="parameters.stop",
        )
    check_stops("parameters.stop", stops)
    cap = max_tokens(params.max_new_tokens, limits, info, default=limits.default_max_tokens)
    sampling = replace(SamplingParams(), max_tokens=cap, stop=stops, seed=params.seed)
    sampled = params.do_sample or any(
        value is not None for value in (params.temperature, params.top_k, params.top_p)
    )
    if not sampled:
        sampling = replace(sampling, temperature=0.0)
    else:
        sampling = replace(
            sampling,
            temperature=1.0 if params.temperature is None else params.temperature,
            top_k=0 if params.top_k is None else params.top_k,
            top_p=1.0 if params.top_p is None else params.top_p,
            min_p=0.0,
        )
    if params.repetition_penalty is not None:
        sampling = replace(sampling, repeat_penalty=params.repetition_penalty)
    if params.frequency_penalty is not None:
        sampling = replace(sampling, frequency_penalty=params.frequency_penalty)
    return sampling


def tgi_grammar(params: TgiParameters, policy: SchemaPolicy | None = None) -> Grammar | None:
    """The grammar TGI's ``{"type": "json", "value": <JSON Schema>}`` asks for."""
    grammar = params.grammar
    if grammar is None:
        return None
    param = "parameters.grammar"
    kind, value = grammar.get("type"), grammar.get("value")
    if kind not in ("json", "json_object"):
        raise InvalidRequest(
            f'{param}: only type "json" (a JSON Schema) is supported, not {kind!r}.', param=param
        )
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidRequest(f"{param}.value is not valid JSON: {exc}", param=param) from exc
    try:
        schema = {"type": "object"} if value is None else value
        return json_grammar(schema, param=param, policy=unreported(policy))
    except InvalidRequest as exc:  # TGI's error body has no "param": name the field
        raise InvalidRequest(f"{param}: {exc.message}", param=param) from exc


def plan_tgi(body: TgiGenerateRequest, info: ModelInfo, limits: Limits, request_id: str) -> TgiPlan:
    """Check a generate request and build its engine request (``inputs`` used as they are)."""
    params = body.parameters
    refused = _unsupported(params)
    if refused:
        names = ", ".join(f"parameters.{name}" for name in refused)
        raise InvalidRequest(f"{names}: not supported by this server.", param=refused[0])
    sampling = replace(
        tgi_sampling(params, limits, info), grammar=tgi_grammar(params, limits.schemas)
    )
    request = GenerationRequest(request_id, body.inputs, sampling)
    return TgiPlan(request, body.inputs, bool(params.details), bool(params.return_full_text))


def tgi_finish_reason(finished: Finished) -> TgiFinishReason:
    """TGI's finish reason for ours."""
    return "length" if finished.reason == "length" else "eos_token"


@dataclass(frozen=True)
class TgiLast:
    """The end of a generation: its last token (None when there was none) and how it ended."""

    token: TgiToken | None
    finished: Finished


async def tgi_tokens(
    events: AsyncIterator[TokenEvent], on_finish: FinishSink
) -> AsyncIterator[TgiToken | TgiLast]:
    """One ``TgiToken`` per generated token, the last one inside a ``TgiLast``.

    One token is held back, so the last can carry the end (TGI's last event does) and any
    text the final event flushes (held-back bytes of a split character or a stop string).
    Pure, like ``generation.pieces``: the stream handle's owner aborts a request cut short.
    """
    held: TgiToken | None = None
    async for event in events:
        if event.finish_reason is None:
            if held is not None:
                yield held
            held = TgiToken(id=event.token_id or 0, text=event.text)
            continue
        if event.usage is None:
            raise GenerationFailed("The engine finished a request without usage.")
        reason = wire_finish_reason(event.finish_reason, event.error)
        if event.text:
            held = held or TgiToken(id=0, text="", special=True)
            held = held.model_copy(update={"text": held.text + event.text})
        finished = Finished(reason, event.usage, event.timings)
        on_finish(finished)
        yield TgiLast(held, finished)
        return
    raise GenerationFailed("The engine's stream ended without a final event.")


def _full(plan: TgiPlan, text: str) -> str:
    return plan.inputs + text if plan.return_full_text else text


async def tgi_stream_events(
    plan: TgiPlan, stream: AsyncIterator[TgiToken | TgiLast]
) -> AsyncIterator[TgiStreamEvent]:
    """TGI's SSE events: one per token; the last also carries the whole text and details."""
    parts: list[str] = []
    index = 0
    async for item in stream:
        if isinstance(item, TgiToken):
            parts.append(item.text)
            yield TgiStreamEvent(index=index, token=item)
            index += 1
            continue
        # A reply of no tokens still ends with one (special, empty) token event, as TGI's.
        last = item.token or TgiToken(id=0, text="", special=True)
        parts.append(last.text)
        finished = item.finished
        details = TgiStreamDetails(
            finish_reason=tgi_finish_reason(finished),
            generated_tokens=finished.usage.completion_tokens,
            seed=plan.request.sampling.seed,
            input_length=finished.usage.prompt_tokens,
        )
        text = _full(plan, "".join(parts))
        yield TgiStreamEvent(index=index, token=last, generated_text=text, details=details)
        return


async def tgi_answer(
    plan: TgiPlan, stream: AsyncIterator[TgiToken | TgiLast]
) -> TgiGenerateResponse:
    """The whole answer, with ``details`` when asked."""
    tokens: list[TgiToken] = []
    async for item in stream:
        if isinstance(item, TgiToken):
            tokens.append(item)
            continue
        if item.token is not None:
            tokens.append(item.token)
        text = _full(plan, "".join(token.text for token in tokens))
        if not plan.details:
            return TgiGenerateResponse(generated_text=text)
        details = TgiDetails(
            finish_reason=tgi_finish_reason(item.finished),
            generated_tokens=item.finished.usage.completion_tokens,
            seed=plan.request.sampling.seed,
            tokens=tokens,
        )
        return TgiGenerateResponse(generated_text=text, details=details)
    raise GenerationFailed("The engine's stream ended without a final event.")


def tgi_info(info: ModelInfo, *, max_queue: int) -> TgiInfo:
    """``GET /info`` from the served model's facts."""
    return TgiInfo(
        model_id=info.name,
        model_dtype=info.quantization,
        model_device_type=info.offload.backend,
        max_concurrent_requests=info.n_slots + max_queue,
        max_stop_sequences=MAX_STOP_SEQUENCES,
        max_input_tokens=info.n_ctx_slot - 1,
        max_total_tokens=info.n_ctx_slot,
        version=TGI_VERSION,
    )
