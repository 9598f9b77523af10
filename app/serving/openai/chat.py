"""OpenAI chat completions: wire request -> engine request, engine events -> OpenAI responses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from app.engine.types import GenerationRequest, ModelInfo, TokenLogprob
from app.errors import GenerationFailed
from app.schemas.chat import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChoiceDelta,
)
from app.schemas.tools import FunctionCall, FunctionCallDelta, ToolCall, ToolCallDelta
from app.serving.chat_template import conversation, render_conversation
from app.serving.context import fit_messages, reply_room
from app.serving.generation import Finished, collect
from app.serving.logprobs import LoggedPiece, chat_logprobs, logprobs_of
from app.serving.openai.plan import ResponsePlan, wire_usage
from app.serving.policy import Limits, max_tokens, served_model_name
from app.serving.render import HOLE, JsonTemplate, RawJson
from app.serving.sampling import sampling_params
from app.serving.tools import ParsedCall, call_message_parts, split_tool_calls, tool_prompt

logger = logging.getLogger(__name__)


def plan_chat(
    body: ChatCompletionRequest,
    info: ModelInfo,
    limits: Limits,
    request_id: str,
    count_tokens: Callable[[str], int] | None = None,
) -> ResponsePlan:
    """Check the request against the served model and limits and build the engine request.

    With ``count_tokens`` and ``limits.context_overflow == "truncate"``, a history longer
    than the slot context loses its oldest turns (see ``context.fit_messages``).
    """
    model = served_model_name(body.model, info, limits)
    asked = body.max_completion_tokens
    if asked is None:
        asked = body.max_tokens
    cap = max_tokens(asked, limits, info, default=limits.default_max_tokens)
    conversation(body.messages)  # the checks on the messages
    tooling = tool_prompt(body, info.chat_template)
    messages: list[Mapping[str, Any]] = list(tooling.messages)
    dropped = 0
    if count_tokens is not None and limits.context_overflow == "truncate":
        fitted = fit_messages(
            messages,
            prompt_tokens=lambda kept: count_tokens(
                render_conversation(kept, info, tools=tooling.template_tools)[0]
            ),
            n_ctx=info.n_ctx_slot,
            room=reply_room(cap, info.n_ctx_slot),
        )
        messages, dropped = fitted.messages, fitted.dropped
        if dropped:
            logger.info(
                "request %s: dropped the %d oldest messages of %d to fit the context",
                request_id,
                dropped,
                len(body.messages),
            )
    prompt, add_bos = render_conversation(messages, info, tools=tooling.template_tools)
    sampling = sampling_params(body, cap)
    if tooling.grammar is not None:
        sampling = replace(sampling, grammar=tooling.grammar)
    request = GenerationRequest(
        request_id=request_id, prompt=prompt, sampling=sampling, add_special=add_bos
    )
    plan = ResponsePlan.new(
        request, id_prefix="chatcmpl", model=model, include_usage=body.wants_usage_chunk()
    )
    return replace(plan, dropped_messages=dropped, tool_calls=tooling.calls)


def _chunk(
    plan: ResponsePlan,
    delta: ChoiceDelta,
    finish: Finished | None = None,
    logprobs: Sequence[TokenLogprob] = (),
) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id=plan.completion_id,
        created=plan.created,
        model=plan.model,
        choices=[
            ChatCompletionChunkChoice(
                delta=delta,
                finish_reason=finish.reason if finish is not None else None,
                logprobs=chat_logprobs(logprobs) if logprobs else None,
            )
        ],
        include_usage=plan.include_usage,
    )


async def chat_chunks(
    plan: ResponsePlan, stream: AsyncIterator[str | Finished]
) -> AsyncIterator[ChatCompletionChunk | RawJson]:
    """OpenAI's chunk sequence: role first, content pieces, finish_reason, optional usage.

    Content chunks come from a template rendered once per stream (see ``render``).
    """
    yield _chunk(plan, ChoiceDelta(role="assistant", content=""))
    content = JsonTemplate(_chunk(plan, ChoiceDelta(content=HOLE)))
    items = stream if plan.tool_calls is None else split_tool_calls(stream, plan.tool_calls)
    n_calls = 0
    async for item in items:
        if isinstance(item, LoggedPiece):
            yield _chunk(plan, ChoiceDelta(content=str(item)), logprobs=item.logprobs)
            continue
        if isinstance(item, str):
            yield content.fill(item)
            continue
        if isinstance(item, ParsedCall):
            for delta in _call_deltas(item, n_calls):
                yield _chunk(plan, ChoiceDelta(tool_calls=[delta]))
            n_calls += 1
            continue
        yield _chunk(plan, ChoiceDelta(), item, item.logprobs)
        if plan.include_usage:
            yield ChatCompletionChunk(
                id=plan.completion_id,
                created=plan.created,
                model=plan.model,
                choices=[],
                usage=wire_usage(item.usage),
                include_usage=True,
            )


async def chat_completion(
    plan: ResponsePlan, stream: AsyncIterator[str | Finished]
) -> ChatCompletion:
    """The whole reply as one ``chat.completion``."""
    logprobs = None
    if plan.tool_calls is None:
        result = await collect(stream)
        message = ChatCompletionMessage(content=result.text)
        finished = result.finished
        if plan.request.sampling.logprobs is not None:
            logprobs = chat_logprobs(result.logprobs)
    else:
        calls = split_tool_calls(stream, plan.tool_calls)
        message, finished, entries = await _collect_calls(calls)
        if plan.request.sampling.logprobs is not None:
            logprobs = chat_logprobs(entries)
    choice = ChatCompletionChoice(message=message, finish_reason=finished.reason, logprobs=logprobs)
    return ChatCompletion(
        id=plan.completion_id,
        created=plan.created,
        model=plan.model,
        choices=[choice],
        usage=wire_usage(finished.usage),
    )


def _call_deltas(call: ParsedCall, index: int) -> list[ToolCallDelta]:
    """A call as OpenAI streams it: id, type and name first, then the arguments."""
    return [
        ToolCallDelta(
            index=index,
            id=call.id,
            type="function",
            function=FunctionCallDelta(name=call.name, arguments=""),
        ),
        ToolCallDelta(index=index, function=FunctionCallDelta(arguments=call.arguments)),
    ]


async def _collect_calls(
    items: AsyncIterator[str | ParsedCall | Finished],
) -> tuple[ChatCompletionMessage, Finished, list[TokenLogprob]]:
    parts: list[str | ParsedCall] = []
    logprobs: list[TokenLogprob] = []
    async for item in items:
        if isinstance(item, Finished):
            content, calls = call_message_parts(parts)
            tool_calls = [
                ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))
                for c in calls
            ]
            message = ChatCompletionMessage(content=content, tool_calls=tool_calls or None)
            return message, item, [*logprobs, *item.logprobs]
        parts.append(item)
        if isinstance(item, str):
            logprobs.extend(logprobs_of(item))
    raise GenerationFailed("The engine's stream ended without a final event.")
