"""A Messages request -> the engine request, through the shared kernels; token counting.

The request is rewritten as a chat conversation (``convert.chat_request``), then goes the
way every chat goes: the template's checks, the tool kernel (prompt, grammar, how calls are
parsed back), context fitting, the chat template, the sampling settings and the token cap
of ``policy``. When the template thinks (``<think>`` and the like, see ``reasoning``), the
reply's reasoning is split out into ``thinking`` blocks; ``thinking.budget_tokens`` is the
reasoning budget (the engine closes the block after that many tokens), and ``disabled``
asks the template not to think, as a zero budget does on chat completions.
Rendering and counting are CPU work: the routes run these functions in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from app.engine.types import ChatPrompt, GenerationRequest, ModelInfo
from app.schemas.anthropic import (
    CountTokensRequest,
    CountTokensResponse,
    MessagesRequest,
    ThinkingConfig,
)
from app.schemas.chat import ChatCompletionRequest
from app.serving.anthropic.convert import chat_request
from app.serving.chat_template import conversation, render_conversation, template_source
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
from app.serving.sampling import sampling_params
from app.serving.tools import ToolCalls, ToolPrompt, tool_prompt

logger = logging.getLogger(__name__)

CountTokens = Callable[..., int]
"""The engine's ``count_tokens(text, *, add_special=...)``."""


@dataclass(frozen=True)
class MessagesPlan:
    """A validated request, ready for the engine, and what its reply needs."""

    request: GenerationRequest
    message_id: str
    model: str
    prompt_tokens: int  # the rendered prompt's tokens (message_start's usage)
    tool_calls: ToolCalls | None = None  # with tools: parse calls out of the reply
    dropped_messages: int = 0  # oldest messages left out to fit the context
    reasoning: ReasoningPlan | None = None  # the template thinks: split it into thinking blocks

    def headers(self) -> dict[str, str]:
        """Response headers that describe the plan (what was dropped to fit, if anything)."""
        return dropped_headers(self.dropped_messages)


@dataclass(frozen=True)
class Rendered:
    """The prompt of a conversation, and what its tools and fitting decided."""

    prompt: ChatPrompt | str  # a ChatPrompt: message contents tokenized as text
    add_bos: bool
    tooling: ToolPrompt
    dropped: int


class _Counter:
    """``count_tokens`` remembering its last answers: fitting counts the whole prompt first,
    and when nothing is dropped that is the prompt that gets counted again."""

    def __init__(self, count_tokens: CountTokens) -> None:
        self._count = count_tokens
        self._known: dict[tuple[str, bool], int] = {}

    def __call__(self, text: str, add_special: bool = True) -> int:
        key = (text, add_special)
        if key not in self._known:
            self._known[key] = self._count(text, add_special=add_special)
        return self._known[key]


def render_prompt(
    chat: ChatCompletionRequest,
    info: ModelInfo,
    *,
    count: Callable[[str, bool], int] | None = None,
    room: int = 0,
    content_as_text: bool = True,
    variables: Mapping[str, Any] | None = None,
) -> Rendered:
    """The prompt for ``chat``; with ``count``, the oldest turns that do not fit are dropped.

    ``variables`` are extra template variables (``enable_thinking``)."""
    conversation(chat.messages)  # the checks on the messages
    tooling = tool_prompt(chat, template_source(info))
    messages: list[Mapping[str, Any]] = list(tooling.messages)
    dropped = 0
    if count is not None:
        fitted = fit_messages(
            messages,
            prompt_tokens=lambda kept: count(
                *_text(render_conversation(kept, info, "", tooling.template_tools, variables))
            ),
            message_tokens=lambda message: count(str(message.get("content") or ""), False),
            n_ctx=info.n_ctx_slot,
            room=room,
        )
        messages, dropped = fitted.messages, fitted.dropped
    prompt, add_bos = render_conversation(
        messages,
        info,
        tools=tooling.template_tools,
        variables=variables,
        content_as_text=content_as_text,
    )
    return Rendered(prompt, add_bos, tooling, dropped)


def _text(rendered: tuple[ChatPrompt | str, bool]) -> tuple[str, bool]:
    return str(rendered[0]), rendered[1]


def plan_messages(
    body: MessagesRequest,
    info: ModelInfo,
    limits: Limits,
    request_id: str,
    count_tokens: CountTokens,
) -> MessagesPlan:
    """Check the request against the served model and limits and build the engine request."""
    choice = choose_model(body.model, info, limits)  # a LoRA adapter's name runs on it
    model = choice.name
    cap = max_tokens(body.max_tokens, limits, info, default=None)
    budget, variables = thinking_settings(body.thinking, limits)
    chat = chat_request(body)
    counter = _Counter(count_tokens)
    fit = limits.context_overflow == "truncate"
    rendered = render_prompt(
        chat,
        info,
        count=counter if fit else None,
        room=reply_room(cap, info.n_ctx_slot),
        content_as_text=not limits.parse_special_in_content,
        variables=variables,
    )
    if rendered.dropped:
        logger.info(
            "request %s: dropped the %d oldest messages of %d to fit the context",
            request_id,
            rendered.dropped,
            len(chat.messages),
        )
    reasoning = plan_reasoning(
        str(rendered.prompt), reasoning_syntax(template_source(info), limits.reasoning_format)
    )
    sampling = sampling_params(chat, cap)
    if rendered.tooling.grammar is not None:
        grammar = after_reasoning(rendered.tooling.grammar, reasoning)
        sampling = replace(sampling, grammar=grammar)
    calls = rendered.tooling.calls
    fmt = calls.fmt if calls is not None else None
    sampling = replace(sampling, special_text=needs_special_text(fmt, reasoning))
    sampling = budgeted(sampling, reasoning, budget)
    request = GenerationRequest(
        request_id=request_id,
        prompt=rendered.prompt,
        sampling=sampling,
        add_special=rendered.add_bos,
        lora=choice.lora,
    )
    return MessagesPlan(
        request,
        message_id=f"msg_{request_id}",
        model=model,
        prompt_tokens=counter(str(rendered.prompt), rendered.add_bos),
        tool_calls=calls,
        dropped_messages=rendered.dropped,
        reasoning=reasoning,
    )


def thinking_settings(
    thinking: ThinkingConfig | None, limits: Limits
) -> tuple[int | None, dict[str, Any]]:
    """The reasoning budget and template variables for ``thinking``: ``enabled`` budgets
    ``budget_tokens``; ``disabled`` is a zero budget and ``enable_thinking=false`` (as a zero
    ``reasoning_budget`` on chat completions); absent or ``adaptive``, the server's default."""
    budget = limits.reasoning_budget
    if thinking is not None and thinking.type == "enabled" and thinking.budget_tokens is not None:
        budget = thinking.budget_tokens
    if thinking is not None and thinking.type == "disabled":
        budget = 0
    return budget, ({"enable_thinking": False} if budget == 0 else {})


def count_message_tokens(
    body: CountTokensRequest, info: ModelInfo, limits: Limits, count_tokens: CountTokens
) -> CountTokensResponse:
    """The tokens the whole request's prompt takes (system, tools, messages), nothing fitted."""
    served_model_name(body.model, info, limits)
    _, variables = thinking_settings(body.thinking, limits)
    rendered = render_prompt(chat_request(body), info, variables=variables)
    return CountTokensResponse(
        input_tokens=count_tokens(str(rendered.prompt), add_special=rendered.add_bos)
    )
