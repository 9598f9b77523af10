"""Responses input -> the chat conversation the shared kernels take.

A Responses request is turned into a ``ChatCompletionRequest`` (a wire type shared by the
kernels: ``tool_prompt``, ``sampling_params``, ``structured``), so tools, grammars and
sampling follow exactly the rules of chat completions:

- ``instructions`` become the first system message (they are not carried over by
  ``previous_response_id``, as OpenAI documents); ``developer`` messages become system ones.
- ``function_call`` items join the assistant message before them as ``tool_calls``;
  ``function_call_output`` items become ``tool`` messages.
- ``reasoning`` items and items of other types are left out (the model never saw them).
- Only ``function`` tools run here; hosted and custom tools are left out with a log line,
  unless ``tool_choice`` forces one (a 400).
- ``text.format`` becomes ``response_format`` (``json_schema`` / ``json_object``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from app.errors import InvalidRequest
from app.schemas.chat import ChatCompletionRequest, ChatMessage
from app.schemas.responses import (
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputItem,
    MessageItem,
    OtherItem,
    ResponsesRequest,
    ToolChoiceFunction,
)
from app.schemas.tools import FunctionCall, ToolCall

logger = logging.getLogger(__name__)

TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})
MAX_FUNCTION_TOOLS = 128


def part_text(content: str | list[ContentPart], *, param: str) -> str:
    """The text of a message's content; parts that are not text (images, files) are a 400."""
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(content):
        if part.type == "refusal":
            continue
        if part.type not in TEXT_PARTS or part.text is None:
            raise InvalidRequest(
                f"{param}[{i}]: content of type {part.type!r} is not supported here "
                "(this server takes text only).",
                param=param,
            )
        texts.append(part.text)
    return "\n".join(texts)


def history_messages(items: str | Sequence[InputItem], request_id: str) -> list[ChatMessage]:
    """The chat messages of the ``input`` items (without ``instructions``)."""
    if isinstance(items, str):
        return [ChatMessage(role="user", content=items)]
    messages: list[ChatMessage] = []
    skipped: list[str] = []
    for i, item in enumerate(items):
        param = f"input[{i}]"
        if isinstance(item, MessageItem):
            text = part_text(item.content, param=f"{param}.content")
            role = "system" if item.role == "developer" else item.role
            messages.append(ChatMessage(role=role, content=text))
        elif isinstance(item, FunctionCallItem):
            _append_call(messages, item)
        elif isinstance(item, FunctionCallOutputItem):
            text = part_text(item.output, param=f"{param}.output")
            messages.append(ChatMessage(role="tool", content=text, tool_call_id=item.call_id))
        else:  # reasoning and other items: the model does not see them
            skipped.append(item.type if isinstance(item, OtherItem) else "reasoning")
    if skipped:
        logger.info("request %s: left out input items of types %s", request_id, sorted(skipped))
    return messages


def _append_call(messages: list[ChatMessage], item: FunctionCallItem) -> None:
    call = ToolCall(
        id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments)
    )
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant":
        messages[-1] = last.model_copy(update={"tool_calls": [*(last.tool_calls or []), call]})
    else:
        messages.append(ChatMessage(role="assistant", content=None, tool_calls=[call]))


def function_tools(body: ResponsesRequest, request_id: str) -> list[FunctionTool]:
    """The function tools of the request; other tool types are left out (and logged)."""
    tools = body.tools or []
    functions = [t for t in tools if isinstance(t, FunctionTool)]
    others = sorted({t.type for t in tools if not isinstance(t, FunctionTool)})
    if others:
        logger.info(
            "request %s: ignoring tools of types %s (only function tools run here)",
            request_id,
            others,
        )
    if len(functions) > MAX_FUNCTION_TOOLS:
        raise InvalidRequest(
            f"At most {MAX_FUNCTION_TOOLS} function tools are supported.", param="tools"
        )
    return functions


def chat_tool_choice(body: ResponsesRequest) -> Any:
    """``tool_choice`` in chat completions' form; one that forces a hosted tool is a 400."""
    choice = body.tool_choice
    if not isinstance(choice, ToolChoiceFunction):
        return choice
    if choice.type != "function" or not choice.name:
        raise InvalidRequest(
            f"tool_choice forces a tool of type {choice.type!r}, which this server does not "
            "run (only function tools).",
            param="tool_choice",
        )
    return {"type": "function", "function": {"name": choice.name}}


def response_format(body: ResponsesRequest) -> dict[str, Any] | None:
    """``text.format`` as chat completions' ``response_format``."""
    fmt = body.text.format if body.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.schema_ is None:
        raise InvalidRequest("text.format of type json_schema needs a schema.", param="text")
    schema = {"name": fmt.name or "response", "schema": fmt.schema_, "strict": fmt.strict}
    return {"type": "json_schema", "json_schema": schema}


def leading_system_merged(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The leading system messages (instructions, then developer ones, as Codex sends them)
    joined into one: many chat templates take a single system turn, and only first."""
    n = 0
    while n < len(messages) and messages[n].role == "system":
        n += 1
    if n < 2:
        return messages
    text = "\n\n".join(m.text() for m in messages[:n] if m.text())
    return [ChatMessage(role="system", content=text), *messages[n:]]


def chat_request(
    body: ResponsesRequest, history: Sequence[ChatMessage], request_id: str
) -> ChatCompletionRequest:
    """The chat request the kernels plan: instructions, history, tools and sampling fields."""
    messages = list(history)
    if body.instructions:
        messages.insert(0, ChatMessage(role="system", content=body.instructions))
    if not messages:
        raise InvalidRequest("input is empty: send some text or items.", param="input")
    messages = leading_system_merged(messages)
    tools = function_tools(body, request_id)
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": messages,
        "max_completion_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "tools": [
            {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
            for t in tools
        ]
        or None,
        "tool_choice": chat_tool_choice(body),
        "parallel_tool_calls": body.parallel_tool_calls,
        "response_format": response_format(body),
    }
    try:
        return ChatCompletionRequest.model_validate(fields, strict=False)
    except ValidationError as exc:  # e.g. a history that chat completions would refuse
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidRequest(f"{where}: {first.get('msg', 'invalid value')}") from exc
