"""OpenAI chat completions: wire request -> engine request, engine events -> OpenAI responses."""

from __future__ import annotations

import asyncio
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
    SchemaCheckResult,
)
from app.schemas.tools import FunctionCall, FunctionCallDelta, ToolCall, ToolCallDelta
from app.serving.chat_template import (
    check_chat_cost,
    conversation,
    render_conversation,
    template_source,
    template_variables,
)
from app.serving.context import fit_messages, reply_room
from app.serving.generation import Finished, collect
from app.serving.logprobs import LoggedPiece, chat_logprobs, logprobs_of
from app.serving.openai.plan import ResponsePlan, wire_usage
from app.serving.policy import Limits, max_tokens
from app.serving.reasoning import (
    Reasoning,
    after_reasoning,
    budgeted,
    needs_special_text,
    plan_reasoning,
    reasoning_syntax,
)
from app.serving.render import HOLE, JsonTemplate, RawJson
from app.serving.sampling import model_choice, sampling_params
from app.serving.schema_check import SchemaCheck, check_reply
from app.serving.structured import response_schema
from app.serving.tools import (
    CallDelta,
    ParsedCall,
    call_message_parts,
    split_tool_calls,
    tool_prompt,
)

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
    choice = model_choice(body, info, limits)
    asked = body.max_completion_tokens
    if asked is None:
        asked = body.max_tokens
    cap = max_tokens(asked, limits, info, default=limits.default_max_tokens)
    check_chat_cost(conversation(body.messages), info.n_ctx_slot)  # before any rendering
    template = template_source(info)
    tooling = tool_prompt(body, template, limits.tool_call_format)
    variables = template_variables(body.chat_template_kwargs, body.reasoning_effort)
    budget = body.reasoning_budget if body.reasoning_budget is not None else limits.reasoning_budget
    if budget == 0:  # as llama-server: a zero budget asks the template not to think
        variables.setdefault("enable_thinking", False)
    messages: list[Mapping[str, Any]] = list(tooling.messages)
    dropped = 0
    if count_tokens is not None and limits.context_overflow == "truncate":
        fitted = fit_messages(
            messages,
            prompt_tokens=lambda kept: count_tokens(
                str(
                    render_conversation(
                        kept,
                        info,
                        tools=tooling.template_tools,
                        variables=variables,
                        content_as_text=False,
                    )[0]
                )
            ),
            message_tokens=lambda message: count_tokens(str(message.get("content") or "")),
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
    prompt, add_bos = render_conversation(
        messages,
        info,
        tools=tooling.template_tools,
        variables=variables,
        content_as_text=not limits.parse_special_in_content,
    )
    syntax = reasoning_syntax(template, body.reasoning_format or limits.reasoning_format)
    reasoning = plan_reasoning(str(prompt), syntax)
    sampling = sampling_params(body, cap, limits.schemas)
    if tooling.grammar is not None:
        sampling = replace(sampling, grammar=tooling.grammar)
    fmt = tooling.calls.fmt if tooling.calls is not None else None
    sampling = replace(sampling, special_text=needs_special_text(fmt, reasoning))
    sampling = budgeted(sampling, reasoning, budget)
    if sampling.grammar is not None and body.grammar is None:  # a raw GBNF is taken as is
        sampling = replace(sampling, grammar=after_reasoning(sampling.grammar, reasoning))
    request = GenerationRequest(
        request_id=request_id,
        prompt=prompt,
        sampling=sampling,
        add_special=add_bos,
        lora=choice.lora,
        speculative=body.speculative is not False,
    )
    plan = ResponsePlan.new(
        request, id_prefix="chatcmpl", model=choice.name, include_usage=body.wants_usage_chunk()
    )
    schema = response_schema(body)
    return replace(
        plan, dropped_messages=dropped, tool_calls=tooling.calls, reasoning=reasoning, schema=schema
    )


def _items(plan: ResponsePlan, stream: AsyncIterator[str | Finished]) -> AsyncIterator[Any]:
    """The reply's items: reasoning split out, then tool calls (with streamed pieces)."""
    items: AsyncIterator[Any] = stream
    if plan.reasoning is not None:
        items = plan.reasoning.split(items)
    if plan.tool_calls is not None:
        items = split_tool_calls(items, plan.tool_calls, deltas=True)
    return items


async def _schema_check(plan: ResponsePlan, text: str, reason: str) -> SchemaCheckResult | None:
    """The reply checked against response_format's schema, off the event loop (a pattern
    can be slow to match); None without a schema."""
    if plan.schema is None:
        return None
    found: SchemaCheck = await asyncio.to_thread(check_reply, plan.schema, text, reason)
    if not found.valid:
        logger.info("request %s: the reply does not validate: %s", plan.request.request_id, found)
    return SchemaCheckResult(
        valid=found.valid, errors=list(found.errors), truncated=found.truncated
    )


def _chunk(
    plan: ResponsePlan,
    delta: ChoiceDelta,
    finish: Finished | None = None,
    logprobs: Sequence[TokenLogprob] = (),
    schema_check: SchemaCheckResult | None = None,
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
                schema_check=schema_check,
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
    calls = _CallStream()
    text: list[str] = []  # the content, for the schema check
    async for item in _items(plan, stream):
        if isinstance(item, LoggedPiece):
            text.append(str(item))
            yield _chunk(plan, ChoiceDelta(content=str(item)), logprobs=item.logprobs)
        elif isinstance(item, str):
            text.append(item)
            yield content.fill(item)
        elif isinstance(item, Reasoning):
            yield _chunk(plan, ChoiceDelta(reasoning_content=item.text))
        elif isinstance(item, CallDelta | ParsedCall):
            for delta in calls.deltas(item):
                yield _chunk(plan, ChoiceDelta(tool_calls=[delta]))
        else:
            check = await _schema_check(plan, "".join(text), item.reason)
            yield _chunk(plan, ChoiceDelta(), item, item.logprobs, check)
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
    if plan.tool_calls is None and plan.reasoning is None:
        result = await collect(stream)
        message = ChatCompletionMessage(content=result.text)
        finished = result.finished
        if plan.request.sampling.logprobs is not None:
            logprobs = chat_logprobs(result.logprobs)
    else:
        message, finished, entries = await _collect_parts(_items(plan, stream))
        if plan.request.sampling.logprobs is not None:
            logprobs = chat_logprobs(entries)
    check = await _schema_check(plan, message.content or "", finished.reason)
    choice = ChatCompletionChoice(
        message=message, finish_reason=finished.reason, logprobs=logprobs, schema_check=check
    )
    return ChatCompletion(
        id=plan.completion_id,
        created=plan.created,
        model=plan.model,
        choices=[choice],
        usage=wire_usage(finished.usage),
    )


class _CallStream:
    """Calls as OpenAI streams them: id, type and name first, then argument pieces.

    A call whose pieces were streamed ends with what its arguments add after them; a call
    that comes whole is sent as its first delta and its arguments.
    """

    def __init__(self) -> None:
        self._sent: dict[str, tuple[int, str]] = {}  # call id -> (index, arguments sent)

    def deltas(self, item: CallDelta | ParsedCall) -> list[ToolCallDelta]:
        """The wire deltas for one item."""
        index, sent = self._sent.get(item.id, (len(self._sent), None))
        out = []
        if sent is None:
            sent = ""
            function = FunctionCallDelta(name=item.name, arguments="")
            out.append(ToolCallDelta(index=index, id=item.id, type="function", function=function))
        more = item.arguments if isinstance(item, CallDelta) else item.arguments[len(sent) :]
        if more:
            out.append(ToolCallDelta(index=index, function=FunctionCallDelta(arguments=more)))
        self._sent[item.id] = (index, sent + more)
        return out


async def _collect_parts(
    items: AsyncIterator[Any],
) -> tuple[ChatCompletionMessage, Finished, list[TokenLogprob]]:
    parts: list[str | ParsedCall] = []
    thoughts: list[str] = []
    logprobs: list[TokenLogprob] = []
    async for item in items:
        if isinstance(item, Finished):
            content, calls = call_message_parts(parts)
            tool_calls = [
                ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))
                for c in calls
            ]
            thought = "".join(thoughts) or None
            message = ChatCompletionMessage(
                content=content,
                tool_calls=tool_calls or None,
                reasoning_content=thought,
                reasoning=thought,
            )
            return message, item, [*logprobs, *item.logprobs]
        if isinstance(item, Reasoning):
            thoughts.append(item.text)
        elif isinstance(item, str | ParsedCall):
            parts.append(item)
            if isinstance(item, str):
                logprobs.extend(logprobs_of(item))
    raise GenerationFailed("The engine's stream ended without a final event.")
