"""Ollama's tools and thinking on ``/api/chat``, over the shared tools and reasoning kernels.

Ollama writes a call's ``arguments`` as an object and pairs a ``tool`` message with its call
by position (or ``tool_name``), not by id; the conversation is turned into the OpenAI shape
the tools kernel takes (ids made up and matched in order), and parsed calls are turned back
into Ollama's ``message.tool_calls``. ``think``: ``false`` asks the template not to think
(``enable_thinking``) and leaves any reasoning in the content; a level (``"low"``...) is
passed as ``reasoning_effort``; otherwise reasoning is split into ``message.thinking``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from app.errors import InvalidRequest
from app.schemas.chat import ChatCompletionRequest
from app.schemas.ollama import OllamaChatRequest, OllamaFunctionCall, OllamaToolCall
from app.serving.tools import ParsedCall


def openai_view(body: OllamaChatRequest) -> ChatCompletionRequest:
    """The chat as the tools kernel takes it (calls get ids; results are matched in order)."""
    messages: list[dict[str, Any]] = []
    waiting: list[str] = []  # ids of calls whose results have not come yet
    for n, message in enumerate(body.messages):
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.role == "assistant" and message.tool_calls:
            calls = []
            for i, call in enumerate(message.tool_calls):
                call_id = call.id or f"call_{n}_{i}"
                waiting.append(call_id)
                arguments = json.dumps(call.function.arguments, ensure_ascii=False)
                calls.append(
                    {
                        "id": call_id,
                        "function": {"name": call.function.name, "arguments": arguments},
                    }
                )
            entry["tool_calls"] = calls
        elif message.role == "tool":
            entry["tool_call_id"] = waiting.pop(0) if waiting else f"call_{n}"
        messages.append(entry)
    try:
        return ChatCompletionRequest.model_validate(
            {"messages": messages, "tools": body.tools or None}
        )
    except ValidationError as exc:
        raise InvalidRequest(f"tools: {exc.errors()[0]['msg']}", param="tools") from exc


def template_variables(think: bool | str | None) -> dict[str, Any]:
    """Template variables ``think`` asks for."""
    if think is False:
        return {"enable_thinking": False}
    if isinstance(think, str):
        return {"reasoning_effort": think}
    return {}


def ollama_calls(calls: list[ParsedCall], first: int = 0) -> list[OllamaToolCall]:
    """Parsed calls in Ollama's shape (arguments as an object)."""
    return [
        OllamaToolCall(
            id=call.id,
            function=OllamaFunctionCall(
                index=first + i, name=call.name, arguments=json.loads(call.arguments)
            ),
        )
        for i, call in enumerate(calls)
    ]
