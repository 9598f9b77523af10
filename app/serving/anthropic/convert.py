"""Anthropic's request -> the shared chat conversation; engine results -> Anthropic's fields.

The serving kernels (tools, sampling, chat template) speak the chat-completions shape, so a
Messages request is first rewritten as one: ``system`` becomes the leading system message,
``tool_use`` blocks become an assistant message's ``tool_calls``, ``tool_result`` blocks
become ``tool`` messages (before the user's text, in their order), ``thinking`` blocks of
earlier turns are dropped, Anthropic's own tool types (server tools) are left out, and
``tool_choice`` maps onto ``auto``/``required``/a named function/``none``. Pure functions:
unit-tested without an engine.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from app.engine.types import Usage as EngineUsage
from app.schemas.anthropic import (
    CountTokensRequest,
    MessageParam,
    MessagesRequest,
    StopReason,
    TextBlockParam,
    ToolChoice,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
    Usage,
)
from app.schemas.chat import ChatCompletionRequest
from app.serving.generation import Finished

logger = logging.getLogger(__name__)

ERROR_PREFIX = "Error: "
"""Put before the text of a ``tool_result`` with ``is_error`` (the model sees it failed)."""


def chat_request(body: MessagesRequest | CountTokensRequest) -> ChatCompletionRequest:
    """The request as a chat completion: conversation, tools, tool choice and sampling."""
    messages: list[dict[str, Any]] = []
    system = body.system if isinstance(body.system, str) else _joined(body.system or [])
    if system:
        messages.append({"role": "system", "content": system})
    for message in body.messages:
        messages.extend(chat_messages(message))
    data: dict[str, Any] = {"messages": messages}
    tools = client_tools(body.tools or [])
    if tools:
        data["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.input_schema,
                    "strict": tool.strict,
                },
            }
            for tool in tools
        ]
    data.update(tool_choice_fields(body.tool_choice))
    if isinstance(body, MessagesRequest):
        data.update(_sampling_fields(body))
    return ChatCompletionRequest.model_validate(data)


def client_tools(tools: list[ToolParam]) -> list[ToolParam]:
    """The custom tools; Anthropic's own tools (web search, code execution, computer use...)
    run on Anthropic's side or have schemas only Anthropic knows: they are left out, logged."""
    ignored = [f"{tool.name} ({tool.type})" for tool in tools if not tool.is_custom]
    if ignored:
        logger.info("ignored Anthropic-defined tools: %s", ", ".join(ignored))
    return [tool for tool in tools if tool.is_custom]


def _sampling_fields(body: MessagesRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "max_tokens": body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "stream": body.stream,
    }
    if body.stop_sequences:
        fields["stop"] = list(body.stop_sequences)
    return {key: value for key, value in fields.items() if value is not None}


def tool_choice_fields(choice: ToolChoice | None) -> dict[str, Any]:
    """Chat's ``tool_choice`` and ``parallel_tool_calls`` for Anthropic's ``tool_choice``."""
    if choice is None:
        return {}
    if isinstance(choice, ToolChoiceNone):
        return {"tool_choice": "none"}
    fields: dict[str, Any] = {}
    if isinstance(choice, ToolChoiceAuto):
        fields["tool_choice"] = "auto"
    elif isinstance(choice, ToolChoiceAny):
        fields["tool_choice"] = "required"
    elif isinstance(choice, ToolChoiceTool):
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    if choice.disable_parallel_tool_use:
        fields["parallel_tool_calls"] = False
    return fields


def chat_messages(message: MessageParam) -> list[dict[str, Any]]:
    """One Anthropic turn as chat messages (a user turn with tool results gives several)."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    texts = [b.text for b in message.content if isinstance(b, TextBlockParam)]
    if message.role == "assistant":
        calls = [
            {
                "id": b.id,
                "type": "function",
                "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)},
            }
            for b in message.content
            if isinstance(b, ToolUseBlockParam)
        ]
        turn: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
        if calls:
            turn["tool_calls"] = calls
        return [turn]
    results = [
        {"role": "tool", "tool_call_id": b.tool_use_id, "content": tool_result_text(b)}
        for b in message.content
        if isinstance(b, ToolResultBlockParam)
    ]
    if texts or not results:
        return [*results, {"role": "user", "content": "\n".join(texts)}]
    return results


def tool_result_text(block: ToolResultBlockParam) -> str:
    """What the model reads of a tool's result (an error is marked as one)."""
    text = block.text()
    return f"{ERROR_PREFIX}{text}" if block.is_error else text


def _joined(blocks: list[TextBlockParam]) -> str:
    return "\n".join(block.text for block in blocks)


def stop_reason(finished: Finished) -> StopReason:
    """Anthropic's ``stop_reason`` for how the generation ended."""
    if finished.reason == "tool_calls":
        return "tool_use"
    if finished.reason == "length":
        return "max_tokens"
    return "stop_sequence" if finished.stop_sequence is not None else "end_turn"


def wire_usage(usage: EngineUsage) -> Usage:
    """Anthropic's usage: prompt tokens read from the prompt cache are not ``input_tokens``
    (Anthropic counts the whole prompt as input + cache reads + cache writes)."""
    cached = usage.cached_prompt_tokens
    return Usage(
        input_tokens=usage.prompt_tokens - cached,
        output_tokens=usage.completion_tokens,
        cache_read_input_tokens=cached,
    )
