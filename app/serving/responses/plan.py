"""A Responses request -> the engine request, through the shared kernels.

The conversation is the stored history of ``previous_response_id`` (if any) plus the new
``input``, with ``instructions`` first; it is rendered with the model's chat template, fitted
to the slot context (``context.fit_messages``), and sampled with the rules of chat
completions (``tool_prompt``, ``sampling_params``). When the template thinks, the reply's
reasoning is split out (``reasoning``) into a ``reasoning`` output item, under the server's
reasoning budget; ``reasoning.effort`` goes to the template as ``reasoning_effort`` (as on
chat completions), and ``none`` asks it not to think, as a zero budget does.
Planning renders templates and counts tokens: the routes run it in a worker thread, off
the event loop.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from app.engine.types import ChatPrompt, GenerationRequest, ModelInfo, SamplingParams
from app.schemas.chat import ChatMessage
from app.schemas.responses import ResponseObject, ResponsesRequest
from app.serving.chat_template import (
    conversation,
    render_conversation,
    template_source,
    template_variables,
)
from app.serving.context import dropped_headers, fit_messages, reply_room
from app.serving.policy import Limits, choose_model, max_tokens, served_model_name
from app.serving.reasoning import (
    ReasoningPlan,
    after_reasoning,
    budgeted,
    needs_special_text,
    plan_reasoning,
    reasoning_syntax,
)
from app.serving.responses.convert import (
    chat_request,
    chat_tool_choice,
    function_tools,
    history_messages,
    response_format,
)
from app.serving.sampling import sampling_params
from app.serving.tools import ToolCalls, tool_prompt

logger = logging.getLogger(__name__)

CountTokens = Callable[[str], int]


@dataclass(frozen=True)
class ResponsesPlan:
    """A validated request ready for the engine, and what its response object needs."""

    request: GenerationRequest
    template: ResponseObject  # the response's echo fields, status in_progress, no output
    history: tuple[ChatMessage, ...]  # the conversation without instructions (for the store)
    tool_calls: ToolCalls | None = None
    dropped_messages: int = 0
    store: bool = True
    reasoning: ReasoningPlan | None = None  # the template thinks: split out a reasoning item

    def headers(self) -> dict[str, str]:
        """Response headers that describe the plan (what was dropped to fit, if anything)."""
        return dropped_headers(self.dropped_messages)


@dataclass(frozen=True)
class Rendered:
    """A rendered prompt and how it was built."""

    prompt: ChatPrompt | str  # a ChatPrompt: message contents tokenized as text
    add_bos: bool
    dropped: int
    tool_calls: ToolCalls | None
    sampling: SamplingParams
    reasoning: ReasoningPlan | None = None


def conversation_of(
    body: ResponsesRequest, previous: Sequence[ChatMessage], request_id: str
) -> list[ChatMessage]:
    """The stored history plus this request's input (instructions not included)."""
    return [*previous, *history_messages(body.input, request_id)]


def render(
    body: ResponsesRequest,
    history: Sequence[ChatMessage],
    info: ModelInfo,
    limits: Limits,
    request_id: str,
    count_tokens: CountTokens | None,
) -> Rendered:
    """Render the conversation (fitted to the context when ``count_tokens`` is given)."""
    chat = chat_request(body, history, request_id)
    conversation(chat.messages)  # the checks chat completions make on the messages
    template = template_source(info)
    tooling = tool_prompt(chat, template, limits.tool_call_format)
    budget, variables = reasoning_settings(body, limits)
    messages: list[Mapping[str, Any]] = list(tooling.messages)
    dropped = 0
    cap = max_tokens(body.max_output_tokens, limits, info, default=limits.default_max_tokens)
    if count_tokens is not None and limits.context_overflow == "truncate":
        fitted = fit_messages(
            messages,
            prompt_tokens=lambda kept: count_tokens(
                str(render_conversation(kept, info, "", tooling.template_tools, variables)[0])
            ),
            message_tokens=lambda message: count_tokens(str(message.get("content") or "")),
            n_ctx=info.n_ctx_slot,
            room=reply_room(cap, info.n_ctx_slot),
        )
        messages, dropped = fitted.messages, fitted.dropped
        if dropped:
            logger.info("request %s: dropped the %d oldest messages", request_id, dropped)
    prompt, add_bos = render_conversation(
        messages,
        info,
        tools=tooling.template_tools,
        variables=variables,
        content_as_text=not limits.parse_special_in_content,
    )
    reasoning = plan_reasoning(str(prompt), reasoning_syntax(template, limits.reasoning_format))
    sampling = sampling_params(chat, cap)
    if tooling.grammar is not None:
        sampling = replace(sampling, grammar=after_reasoning(tooling.grammar, reasoning))
    fmt = tooling.calls.fmt if tooling.calls is not None else None
    sampling = replace(sampling, special_text=needs_special_text(fmt, reasoning))
    sampling = budgeted(sampling, reasoning, budget)
    return Rendered(prompt, add_bos, dropped, tooling.calls, sampling, reasoning)


def reasoning_settings(body: ResponsesRequest, limits: Limits) -> tuple[int | None, dict[str, Any]]:
    """The reasoning budget and template variables for ``reasoning.effort``: ``none`` is a
    zero budget and ``enable_thinking=false``; another effort is passed as
    ``reasoning_effort``; the budget is the server's."""
    effort = body.reasoning.effort if body.reasoning is not None else None
    budget = 0 if effort == "none" else limits.reasoning_budget
    variables = template_variables(None, effort if effort not in (None, "none") else None)
    if budget == 0:
        variables.setdefault("enable_thinking", False)
    return budget, variables


def plan_response(
    body: ResponsesRequest,
    previous: Sequence[ChatMessage],
    info: ModelInfo,
    limits: Limits,
    request_id: str,
    count_tokens: CountTokens | None = None,
) -> ResponsesPlan:
    """Check the request against the served model and limits and build the engine request."""
    choice = choose_model(body.model, info, limits)  # a LoRA adapter's name runs on it
    model = choice.name
    history = conversation_of(body, previous, request_id)
    rendered = render(body, history, info, limits, request_id, count_tokens)
    request = GenerationRequest(
        request_id=request_id,
        prompt=rendered.prompt,
        sampling=rendered.sampling,
        add_special=rendered.add_bos,
        lora=choice.lora,
    )
    return ResponsesPlan(
        request=request,
        template=response_template(body, model, request_id, rendered.sampling),
        history=tuple(history),
        tool_calls=rendered.tool_calls,
        dropped_messages=rendered.dropped,
        store=body.store is not False,
        reasoning=rendered.reasoning,
    )


def input_prompt(
    body: ResponsesRequest,
    previous: Sequence[ChatMessage],
    info: ModelInfo,
    limits: Limits,
    request_id: str,
) -> tuple[str, bool]:
    """The prompt this request would send and whether BOS is added (for ``input_tokens``:
    rendered as ``/v1/responses`` renders it, without fitting it to the context)."""
    served_model_name(body.model, info, limits)
    history = conversation_of(body, previous, request_id)
    rendered = render(body, history, info, limits, request_id, None)
    return str(rendered.prompt), rendered.add_bos


def response_template(
    body: ResponsesRequest, model: str, request_id: str, sampling: SamplingParams
) -> ResponseObject:
    """The response's echo of the request (with the sampling values used), ``in_progress``
    and without output yet."""
    choice = chat_tool_choice(body)
    tools = [t.model_dump(exclude_none=True) for t in function_tools(body, request_id)]
    fmt = response_format(body)
    text: dict[str, Any] = {"format": {"type": "text"}}
    if body.text is not None and body.text.format is not None and fmt is not None:
        text = {"format": body.text.format.model_dump(by_alias=True, exclude_none=True)}
    reasoning = body.reasoning.model_dump() if body.reasoning is not None else None
    return ResponseObject(
        id=f"resp_{uuid.uuid4().hex}",
        created_at=int(time.time()),
        status="in_progress",
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        model=model,
        parallel_tool_calls=body.parallel_tool_calls is not False,
        previous_response_id=body.previous_response_id,
        reasoning=reasoning or {"effort": None, "summary": None},
        store=body.store is not False,
        temperature=sampling.temperature,
        text=text,
        tool_choice=_echo_choice(choice),
        tools=tools,
        top_p=sampling.top_p,
        user=body.user,
        metadata=body.metadata or {},
    )


def _echo_choice(choice: Any) -> str | dict[str, Any]:
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    return {"type": "function", "name": choice["function"]["name"]}
