"""Ollama's ``/api/chat`` and ``/api/generate``: wire request -> engine request, events -> lines.

``options`` map onto ``SamplingParams`` (temperature, top_k, top_p, min_p, num_predict, stop,
seed, repeat_penalty, repeat_last_n, presence/frequency_penalty); ``num_ctx`` and the other
Modelfile knobs are ignored with a log line (a slot's context is set at start-up).
``format`` ("json" or a JSON Schema) constrains the reply through the grammar sampler, as
``response_format`` does on the OpenAI routes. ``tools`` and ``think`` on ``/api/chat`` go
through the shared tools and reasoning kernels (see ``ollama/tools.py``). Images, custom
templates, ``suffix`` and ``context`` are refused with a 400 naming the field rather than
silently ignored.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from app.engine.types import GenerationRequest, Grammar, ModelInfo, SamplingParams
from app.errors import GenerationFailed, InvalidRequest
from app.limits import check_stops
from app.schemas.common import MAX_STOP_SEQUENCES
from app.schemas.ollama import (
    OllamaAssistantMessage,
    OllamaChatRequest,
    OllamaChatResponse,
    OllamaGenerateRequest,
    OllamaGenerateResponse,
    OllamaOptions,
    OllamaRequest,
    OllamaStats,
)
from app.serving.chat_template import needs_bos, render_conversation, template_source
from app.serving.generation import Finished, collect
from app.serving.ollama.tools import ollama_calls, openai_view, template_variables
from app.serving.policy import Limits, ModelChoice, choose_model, max_tokens
from app.serving.reasoning import (
    Reasoning,
    ReasoningPlan,
    after_reasoning,
    needs_special_text,
    plan_reasoning,
    reasoning_syntax,
)
from app.serving.schema_check import SchemaPolicy, unreported
from app.serving.structured import json_grammar
from app.serving.tools import ParsedCall, ToolCalls, split_tool_calls, tool_prompt

logger = logging.getLogger(__name__)

LOAD_REASON = "load"  # Ollama's done_reason for a request that only loads the model
_MAPPED = frozenset(OllamaOptions.model_fields) - {"num_ctx"}


def ollama_time(when: float | None = None) -> str:
    """An RFC 3339 UTC timestamp as Ollama writes it."""
    moment = datetime.fromtimestamp(time.time() if when is None else when, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ollama_model_name(requested: str, info: ModelInfo, limits: Limits) -> str:
    """The served id for an Ollama model name (``name`` or ``name:latest``; any name unless
    ``--strict-model-names``, as on the OpenAI routes)."""
    return ollama_model_choice(requested, info, limits).name


def ollama_model_choice(requested: str, info: ModelInfo, limits: Limits) -> ModelChoice:
    """The model an Ollama name selects: a LoRA adapter by its name, else the served model."""
    return choose_model(requested.removesuffix(":latest") or None, info, limits)


def sampling_from_options(
    options: OllamaOptions | None, limits: Limits, info: ModelInfo
) -> SamplingParams:
    """Engine sampling settings from Ollama's ``options`` (unset keys keep our defaults)."""
    defaults = SamplingParams()
    if options is None:
        cap = max_tokens(None, limits, info, default=limits.default_max_tokens)
        return replace(defaults, max_tokens=cap)
    ignored = sorted({*(options.model_extra or {}), *({"num_ctx"} & options.model_fields_set)})
    if ignored:
        logger.info("ignoring Ollama options this server does not map: %s", ", ".join(ignored))
    given = {key: getattr(options, key) for key in _MAPPED if getattr(options, key) is not None}
    num_predict = given.pop("num_predict", None)
    if num_predict is not None and num_predict < 0:  # -1: no cap, -2: fill the context
        cap = max_tokens(None, limits, info, default=None)
    else:
        cap = max_tokens(num_predict or None, limits, info, default=limits.default_max_tokens)
    last_n = given.pop("repeat_last_n", None)
    stops = tuple(stop for stop in given.pop("stop", None) or () if stop)
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(
            f"options.stop: at most {MAX_STOP_SEQUENCES} stop sequences are allowed.",
            param="options.stop",
        )
    check_stops("options.stop", stops)
    sampling = replace(defaults, **given, max_tokens=cap, stop=stops)
    if last_n is not None:
        sampling = replace(sampling, penalty_last_n=last_n)
    return sampling


def _refuse(field: str, what: str) -> None:
    raise InvalidRequest(f"{field}: {what} is not supported by this server.", param=field)


def ollama_grammar(body: OllamaRequest, policy: SchemaPolicy | None = None) -> Grammar | None:
    """The grammar ``format`` asks for: ``"json"`` (any JSON object) or a JSON Schema."""
    fmt = body.format
    if fmt is None or fmt == "":
        return None
    if fmt != "json" and not isinstance(fmt, dict):
        raise InvalidRequest('format: send "json" or a JSON Schema object.', param="format")
    try:
        schema = {"type": "object"} if fmt == "json" else fmt
        return json_grammar(schema, param="format", policy=unreported(policy))
    except InvalidRequest as exc:  # Ollama's error body has no "param": name the field
        raise InvalidRequest(f"format: {exc.message}", param="format") from exc


@dataclass(frozen=True)
class OllamaPlan:
    """A validated Ollama request: the engine request (None: only "load the model")."""

    request: GenerationRequest | None
    model: str
    chat: bool
    started: float  # time.perf_counter() when the request arrived
    calls: ToolCalls | None = None  # tools offered: parse calls out of the reply
    reasoning: ReasoningPlan | None = None  # split the reasoning into message.thinking


def plan_ollama_chat(
    body: OllamaChatRequest, info: ModelInfo, limits: Limits, request_id: str
) -> OllamaPlan:
    """Check a ``/api/chat`` body and build its engine request."""
    choice = ollama_model_choice(body.model, info, limits)
    model = choice.name
    grammar = ollama_grammar(body, limits.schemas)
    if any(message.images for message in body.messages):
        _refuse("messages.images", "image input")
    started = time.perf_counter()
    if not body.messages:
        return OllamaPlan(None, model, True, started)
    template = template_source(info)
    tooling = tool_prompt(openai_view(body), template, limits.tool_call_format)
    variables = template_variables(body.think)
    prompt, add_bos = render_conversation(
        tooling.messages,
        info,
        tools=tooling.template_tools,
        variables=variables,
        content_as_text=not limits.parse_special_in_content,
    )
    thinking = "none" if body.think is False else limits.reasoning_format
    reasoning = plan_reasoning(str(prompt), reasoning_syntax(template, thinking))
    grammar = grammar or tooling.grammar  # a format wins over the lazy call grammar
    if grammar is not None:
        grammar = after_reasoning(grammar, reasoning)
    fmt = tooling.calls.fmt if tooling.calls is not None else None
    sampling = replace(
        sampling_from_options(body.options, limits, info),
        grammar=grammar,
        special_text=needs_special_text(fmt, reasoning),
    )
    request = GenerationRequest(request_id, prompt, sampling, add_special=add_bos, lora=choice.lora)
    return OllamaPlan(request, model, True, started, tooling.calls, reasoning)


def plan_ollama_generate(
    body: OllamaGenerateRequest, info: ModelInfo, limits: Limits, request_id: str
) -> OllamaPlan:
    """Check a ``/api/generate`` body and build its engine request."""
    choice = ollama_model_choice(body.model, info, limits)
    model = choice.name
    grammar = ollama_grammar(body, limits.schemas)
    for field, value, what in (
        ("template", body.template, "a custom prompt template (send raw=true instead)"),
        ("images", body.images, "image input"),
        ("context", body.context, "continuing from a returned context"),
        ("suffix", body.suffix, "fill-in-the-middle (suffix)"),
    ):
        if value:
            _refuse(field, what)
    started = time.perf_counter()
    if not body.prompt:
        return OllamaPlan(None, model, False, started)
    sampling = replace(sampling_from_options(body.options, limits, info), grammar=grammar)
    if body.raw:
        add_bos = needs_bos(body.prompt, info.bos_token)
        request = GenerationRequest(
            request_id, body.prompt, sampling, add_special=add_bos, lora=choice.lora
        )
        return OllamaPlan(request, model, False, started)
    messages: list[Mapping[str, str]] = [{"role": "user", "content": body.prompt}]
    if body.system is not None:
        messages.insert(0, {"role": "system", "content": body.system})
    prompt, add_bos = render_conversation(
        messages, info, content_as_text=not limits.parse_special_in_content
    )
    request = GenerationRequest(request_id, prompt, sampling, add_special=add_bos, lora=choice.lora)
    return OllamaPlan(request, model, False, started)


def _stats(plan: OllamaPlan, finished: Finished) -> OllamaStats:
    usage, timings = finished.usage, finished.timings
    return OllamaStats(
        total_duration=int((time.perf_counter() - plan.started) * 1e9),
        load_duration=0,
        prompt_eval_count=usage.prompt_tokens,
        prompt_eval_duration=int(timings.prefill_s * 1e9) if timings else None,
        eval_count=usage.completion_tokens,
        eval_duration=int(timings.decode_s * 1e9) if timings else None,
    )


def ollama_line(
    plan: OllamaPlan,
    text: str,
    finished: Finished | None = None,
    *,
    reason: str | None = None,
    thinking: str | None = None,
    calls: list[ParsedCall] | None = None,
    first_call: int = 0,
) -> BaseModel:
    """One line of the answer: a piece of text (or thinking, or calls), or the last line."""
    common: dict[str, Any] = {
        "model": plan.model,
        "created_at": ollama_time(),
        "done": finished is not None,
    }
    if finished is not None:
        done_reason = "stop" if finished.reason == "tool_calls" else finished.reason
        common.update(_stats(plan, finished).model_dump(), done_reason=done_reason)
    elif reason is not None:
        common.update(done=True, done_reason=reason)
    if plan.chat:
        message = OllamaAssistantMessage(
            content=text,
            thinking=thinking,
            tool_calls=ollama_calls(calls, first_call) if calls else None,
        )
        return OllamaChatResponse(message=message, **common)
    return OllamaGenerateResponse(response=text, **common)


def load_only_line(plan: OllamaPlan) -> BaseModel:
    """The answer to a request without prompt or messages: the model is loaded."""
    return ollama_line(plan, "", reason=LOAD_REASON)


def _items(plan: OllamaPlan, stream: AsyncIterator[str | Finished]) -> AsyncIterator[Any]:
    items: AsyncIterator[Any] = stream
    if plan.reasoning is not None:
        items = plan.reasoning.split(items)
    if plan.calls is not None:
        items = split_tool_calls(items, plan.calls)
    return items


async def ollama_lines(
    plan: OllamaPlan, stream: AsyncIterator[str | Finished]
) -> AsyncIterator[BaseModel]:
    """Ollama's stream: one line per text piece (thinking, a call), then a ``done`` line."""
    n_calls = 0
    async for item in _items(plan, stream):
        if isinstance(item, Finished):
            yield ollama_line(plan, "", item)
            return
        if isinstance(item, Reasoning):
            yield ollama_line(plan, "", thinking=item.text)
        elif isinstance(item, ParsedCall):
            yield ollama_line(plan, "", calls=[item], first_call=n_calls)
            n_calls += 1
        else:
            yield ollama_line(plan, item)


async def ollama_answer(plan: OllamaPlan, stream: AsyncIterator[str | Finished]) -> BaseModel:
    """The whole answer as one object (``"stream": false``)."""
    if plan.calls is None and plan.reasoning is None:
        result = await collect(stream)
        return ollama_line(plan, result.text, result.finished)
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ParsedCall] = []
    async for item in _items(plan, stream):
        if isinstance(item, Finished):
            content = "".join(texts)
            return ollama_line(
                plan,
                content.strip() if calls else content,
                item,
                thinking="".join(thoughts) or None,
                calls=calls,
            )
        if isinstance(item, Reasoning):
            thoughts.append(item.text)
        elif isinstance(item, ParsedCall):
            calls.append(item)
        else:
            texts.append(item)
    raise GenerationFailed("The engine's stream ended without a final event.")


_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def keep_alive_seconds(value: str | int | float | None) -> float | None:
    """Ollama's ``keep_alive`` in seconds: a number of seconds, or a duration such as
    ``"5m"``, ``"1h30m"``, ``"0"``; negative keeps the model loaded; None: not given."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    text = value.strip().lower()
    parts = _DURATION.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise InvalidRequest(
            f"keep_alive: {value!r} is not a duration (seconds, or like '5m', '1h', '-1').",
            param="keep_alive",
        )
    return sum(float(number) * _UNIT_S[unit or None] for number, unit in parts)
