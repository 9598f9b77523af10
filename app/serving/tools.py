"""Tool calling: tools into the prompt, a grammar for the calls, calls out of the reply.

The call syntax is the model family's own (``tool_formats/``: Hermes/Qwen ``<tool_call>``,
Llama 3 JSON, Mistral ``[TOOL_CALLS]``, Qwen3-Coder XML, DeepSeek call blocks), chosen from
the chat template or by ``--tool-call-format``. Templates that render ``tools`` get the tools
and the history (assistant ``tool_calls``, ``tool`` results) as they expect them; any other
template gets the generic form: the tool list and the call format described in the system
message, earlier calls written back as ``<tool_call>`` blocks and tool results as
``<tool_response>`` user turns.

``tool_choice``: ``none`` shows no tools and never parses a call; ``required`` (or a named
function) constrains the reply with a grammar to well-formed calls in the family's syntax
whose arguments validate against the function's parameter schema (for a tool that is not
``strict``, the part of the schema the grammar can enforce: ``json_schema.enforceable_schema``,
see ``tool_formats.base.arguments_schema``): exactly one call, unless
``parallel_tool_calls`` is true, and the reply ends after it; ``auto`` uses a lazy grammar
that takes over once the model opens a call. Calls are parsed back into OpenAI's
``tool_calls``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from app.engine.types import Grammar, TokenLogprob
from app.errors import InvalidRequest
from app.limits import MAX_TOOL_ARGUMENT_DEPTH, json_depth, over_limit
from app.schemas.chat import ChatCompletionRequest, ChatMessage
from app.schemas.tools import NamedToolChoice, ToolDefinition
from app.serving.generation import Finished
from app.serving.logprobs import LoggedPiece, logprobs_of
from app.serving.tool_formats import (
    CallDelta,
    CallSplitter,
    ParsedCall,
    ToolFormat,
    ToolSpec,
    choose_format,
)
from app.serving.tool_formats.hermes import GenericFormat, HermesFormat

__all__ = [
    "CallDelta",
    "ParsedCall",
    "ToolCalls",
    "ToolPrompt",
    "call_message_parts",
    "split_tool_calls",
    "tool_prompt",
    "wire_tools",
]

OPEN, CLOSE = HermesFormat.open, HermesFormat.close


@dataclass(frozen=True)
class ToolCalls:
    """How to find the calls in a reply: the names that may be called, in which syntax."""

    names: frozenset[str]
    fmt: ToolFormat = field(default_factory=GenericFormat)


@dataclass(frozen=True)
class ToolPrompt:
    """A conversation ready for the template, plus the grammar and parsing it needs."""

    messages: list[dict[str, Any]]
    template_tools: list[dict[str, Any]] | None = None
    grammar: Grammar | None = None
    calls: ToolCalls | None = None


def takes_tools(template: str | None, override: str = "auto") -> bool:
    """Whether the model's template renders ``tools`` in a format we parse."""
    return choose_format(template, override).native


def tool_prompt(
    body: ChatCompletionRequest,
    template: str | None,
    override: str = "auto",
) -> ToolPrompt:
    """The conversation, tools, grammar and parsing for a request (with or without tools).

    ``override`` names a tool-call format (``--tool-call-format``).
    """
    fmt = choose_format(template, override)
    tools = _offered(body)
    messages = [_message(m, fmt) for m in body.messages]
    if not tools:
        return ToolPrompt(messages)
    if (body.response_format is not None and body.response_format.type != "text") or body.grammar:
        raise InvalidRequest(
            "Tools cannot be combined with a JSON response_format or a grammar here.",
            param="tools",
        )
    # Some templates (gpt-oss) read every tool's description: an absent one is empty.
    definitions = [{"description": "", **t.function.model_dump(exclude_none=True)} for t in tools]
    wire_tools = [{"type": "function", "function": d} for d in definitions]
    if not fmt.native:
        messages = _with_tool_system_prompt(messages, wire_tools)
    spec = _spec(body, tools)
    fmt = fmt.bind(spec)
    return ToolPrompt(
        messages,
        template_tools=wire_tools if fmt.native else None,
        grammar=fmt.grammar(spec),
        calls=ToolCalls(frozenset(t.function.name for t in tools), fmt),
    )


def _spec(body: ChatCompletionRequest, tools: list[ToolDefinition]) -> ToolSpec:
    choice = body.tool_choice
    named = isinstance(choice, NamedToolChoice)
    if isinstance(choice, NamedToolChoice):
        tools = [t for t in tools if t.function.name == choice.function.name]
    # A named choice is exactly one call; otherwise several only when asked for (as
    # llama-server): a forced grammar that allows more lets a small model repeat its call.
    parallel = body.parallel_tool_calls is True and not named
    forced = named or choice == "required"
    return ToolSpec(tuple(tools), forced=forced, parallel=parallel)


def _offered(body: ChatCompletionRequest) -> list[ToolDefinition]:
    """The tools the model may call under ``tool_choice`` (none: no tools at all)."""
    tools = body.tools or []
    choice = body.tool_choice
    if choice == "none" or not tools:
        if isinstance(choice, NamedToolChoice) or choice == "required":
            raise InvalidRequest("tool_choice needs tools to choose from.", param="tool_choice")
        return []
    if isinstance(choice, NamedToolChoice):
        named = [t for t in tools if t.function.name == choice.function.name]
        if not named:
            raise InvalidRequest(
                f"tool_choice names {choice.function.name!r}, which is not in tools.",
                param="tool_choice",
            )
    return tools


def _message(message: ChatMessage, fmt: ToolFormat) -> dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    text = message.text()
    if role == "tool":
        if fmt.native:
            call_id = fmt.history_id(message.tool_call_id)
            return {"role": "tool", "content": text, "tool_call_id": call_id}
        return {"role": "user", "content": f"<tool_response>\n{text}\n</tool_response>"}
    if role != "assistant" or not message.tool_calls:
        return {"role": role, "content": text}
    calls = [
        {"name": c.function.name, "arguments": _arguments(c.function.arguments)}
        for c in message.tool_calls
    ]
    if fmt.native:
        history = [
            fmt.history_call(fmt.history_id(c.id) or c.id, f["name"], f["arguments"])
            for c, f in zip(message.tool_calls, calls, strict=True)
        ]
        return {"role": "assistant", "content": text, "tool_calls": history}
    blocks = "\n".join(f"{OPEN}\n{json.dumps(c, ensure_ascii=False)}\n{CLOSE}" for c in calls)
    return {"role": "assistant", "content": f"{text}\n{blocks}" if text else blocks}


def _arguments(text: str) -> Any:
    """A history tool call's arguments, parsed; too deep a nesting is a 400 (it would
    overflow the parser here, or the template's ``tojson`` later)."""
    field = "messages[].tool_calls[].function.arguments"
    limit = MAX_TOOL_ARGUMENT_DEPTH
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"A tool call's arguments in the history are not JSON: {exc}", param="messages"
        ) from exc
    except RecursionError as exc:
        raise over_limit(limit, field, limit.value + 1) from exc
    depth = json_depth(value)
    if depth > limit.value:
        raise over_limit(limit, field, depth)
    return value


def _with_tool_system_prompt(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    listing = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools)
    text = (
        "# Tools\n\nYou may call one or more functions to help with the user's request. "
        f"The functions, with their parameters as JSON Schema:\n{listing}\n\n"
        "To call a function, reply with its name and arguments as a JSON object inside "
        f'{OPEN}{CLOSE} tags:\n{OPEN}\n{{"name": "<function-name>", "arguments": '
        f"{{<arguments>}}}}\n{CLOSE}"
    )
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{text}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


async def split_tool_calls(
    stream: AsyncIterator[Any], calls: ToolCalls, *, deltas: bool = False
) -> AsyncIterator[Any]:
    """``stream`` with tool calls parsed out; the end says ``tool_calls`` when there were any.

    Yields content text, ``ParsedCall`` (each call, whole) and the final ``Finished``; with
    ``deltas``, also ``CallDelta`` pieces of each call as its arguments are generated. Items
    that are not text (reasoning pieces) pass through. Logprobs stay with the content text;
    those of a call's own tokens are dropped (OpenAI reports logprobs for content only).
    """
    splitter = CallSplitter(calls.fmt, calls.names)
    pending: list[TokenLogprob] = []
    async for item in stream:
        if isinstance(item, Finished):
            for text in splitter.flush(cut=item.reason == "length"):
                if isinstance(text, ParsedCall):
                    yield text
                    continue
                yield LoggedPiece(text, pending) if pending and isinstance(text, str) else text
                pending = []
            if splitter.n_calls and item.reason == "stop":
                item = replace(item, reason="tool_calls")
            yield replace(item, logprobs=(*pending, *item.logprobs))
            continue
        if not isinstance(item, str):
            yield item
            continue
        pending.extend(logprobs_of(item))
        for out in splitter.push(item):
            if isinstance(out, str):
                yield LoggedPiece(out, pending) if pending else out
                pending = []
                continue
            pending.clear()
            if deltas or isinstance(out, ParsedCall):
                yield out


def call_message_parts(items: list[str | ParsedCall]) -> tuple[str | None, list[ParsedCall]]:
    """Content (None when there were calls and no text) and the calls of a whole reply."""
    text = "".join(i for i in items if isinstance(i, str))
    found = [i for i in items if isinstance(i, ParsedCall)]
    if found:
        return (text.strip() or None), found
    return text, found


def wire_tools(calls: list[ParsedCall]) -> list[Mapping[str, Any]]:
    """OpenAI's ``tool_calls`` list of a message."""
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]
