"""Tool calling: tools into the prompt, a grammar for the calls, calls out of the reply.

One call format, Hermes/Qwen's: a ``<tool_call>`` block holding ``{"name": ..., "arguments":
{...}}``. Templates that render ``tools`` themselves in that format (Qwen 2.5/3, Hermes) get
the tools and the history as they expect them; any other template gets the generic form:
the tool list and the call format described in the system message, earlier calls written
back as ``<tool_call>`` blocks and tool results as ``<tool_response>`` user turns.

``tool_choice``: ``none`` shows no tools and never parses a call; ``required`` (or a named
function) constrains the reply with a grammar to well-formed calls whose arguments validate
against the function's parameter schema (for a tool that is not ``strict``, the part of the
schema the grammar can enforce: ``json_schema.enforceable_schema``); ``auto`` uses a lazy
grammar that takes over once the model writes ``<tool_call>``. Calls are parsed back into
OpenAI's ``tool_calls``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from app.engine.types import Grammar, JsonRule, TokenLogprob
from app.errors import InvalidRequest
from app.schemas.chat import ChatCompletionRequest, ChatMessage
from app.schemas.tools import FunctionDefinition, NamedToolChoice, ToolDefinition
from app.serving.generation import Finished
from app.serving.json_schema import canonical_schema, enforceable_schema
from app.serving.logprobs import LoggedPiece, logprobs_of

logger = logging.getLogger(__name__)

OPEN, CLOSE = "<tool_call>", "</tool_call>"
ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class ParsedCall:
    """One tool call found in the reply (``arguments`` is JSON text, as OpenAI sends it)."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


@dataclass(frozen=True)
class ToolCalls:
    """How to find the calls in a reply: the names that may be called."""

    names: frozenset[str]


@dataclass(frozen=True)
class ToolPrompt:
    """A conversation ready for the template, plus the grammar and parsing it needs."""

    messages: list[dict[str, Any]]
    template_tools: list[dict[str, Any]] | None = None
    grammar: Grammar | None = None
    calls: ToolCalls | None = None


def takes_tools(template: str | None) -> bool:
    """Whether the model's template renders ``tools`` and asks for ``<tool_call>`` blocks."""
    return bool(template) and "tools" in (template or "") and OPEN in (template or "")


def tool_prompt(body: ChatCompletionRequest, template: str | None) -> ToolPrompt:
    """The conversation, tools, grammar and parsing for a request (with or without tools)."""
    native = takes_tools(template)
    tools = _offered(body)
    messages = [_message(m, native) for m in body.messages]
    if not tools:
        return ToolPrompt(messages)
    if (body.response_format is not None and body.response_format.type != "text") or body.grammar:
        raise InvalidRequest(
            "Tools cannot be combined with a JSON response_format or a grammar here.",
            param="tools",
        )
    definitions = [t.function.model_dump(exclude_none=True) for t in tools]
    wire_tools = [{"type": "function", "function": d} for d in definitions]
    if not native:
        messages = _with_tool_system_prompt(messages, wire_tools)
    return ToolPrompt(
        messages,
        template_tools=wire_tools if native else None,
        grammar=_grammar(body, tools),
        calls=ToolCalls(frozenset(t.function.name for t in tools)),
    )


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


def _grammar(body: ChatCompletionRequest, tools: list[ToolDefinition]) -> Grammar:
    choice = body.tool_choice
    if isinstance(choice, NamedToolChoice):
        tools = [t for t in tools if t.function.name == choice.function.name]
    rules, alternatives = [], []
    for i, tool in enumerate(tools):
        rules.append(JsonRule(f"tool-args-{i}", _arguments_schema(tool.function)))
        name = json.dumps(tool.function.name)
        alternatives.append(
            f'"{{" space "\\"name\\"" space ":" space {json.dumps(name)} space "," space '
            f'"\\"arguments\\"" space ":" space tool-args-{i} "}}" space'
        )
    more = ' ("\\n" tc-call)*' if body.parallel_tool_calls is not False else ""
    lazy = choice is None or choice == "auto"
    lines = [
        f"root ::= {'tc-body' if lazy else 'tc-call'}{more}",
        f'tc-call ::= "{OPEN}" tc-body',
        f'tc-body ::= "\\n"? tc-json "\\n"? "{CLOSE}"',
        "tc-json ::= " + " | ".join(f"tc-{i}" for i in range(len(tools))),
        *(f"tc-{i} ::= {alt}" for i, alt in enumerate(alternatives)),
    ]
    return Grammar("\n".join(lines), tuple(rules), trigger=OPEN if lazy else "", param="tools")


def _arguments_schema(function: FunctionDefinition) -> str:
    """The schema a call's arguments are generated under: exactly the tool's when it is
    ``strict`` (a 400 for what the grammar cannot enforce), else the part of it the grammar
    can enforce (the model still reads the whole schema in the prompt)."""
    schema: object = function.parameters or ANY_OBJECT
    if not function.strict:
        schema, dropped = enforceable_schema(schema)
        if dropped:
            logger.debug("tool %s: not enforced: %s", function.name, "; ".join(dropped))
    return canonical_schema(schema, param="tools")


def _message(message: ChatMessage, native: bool) -> dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    text = message.text()
    if role == "tool":
        if native:
            return {"role": "tool", "content": text, "tool_call_id": message.tool_call_id}
        return {"role": "user", "content": f"<tool_response>\n{text}\n</tool_response>"}
    if role != "assistant" or not message.tool_calls:
        return {"role": role, "content": text}
    calls = [
        {"name": c.function.name, "arguments": _arguments(c.function.arguments)}
        for c in message.tool_calls
    ]
    if native:
        history = [
            {"id": c.id, "type": "function", "function": f}
            for c, f in zip(message.tool_calls, calls, strict=True)
        ]
        return {"role": "assistant", "content": text, "tool_calls": history}
    blocks = "\n".join(f"{OPEN}\n{json.dumps(c, ensure_ascii=False)}\n{CLOSE}" for c in calls)
    return {"role": "assistant", "content": f"{text}\n{blocks}" if text else blocks}


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"A tool call's arguments in the history are not JSON: {exc}", param="messages"
        ) from exc


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


def parse_call(block: str, names: frozenset[str]) -> ParsedCall | None:
    """The call in the text between ``<tool_call>`` and ``</tool_call>``; None if it is not one."""
    try:
        data = json.loads(block)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("name") not in names:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # some models send the arguments already as JSON text
        return ParsedCall(data["name"], arguments)
    return ParsedCall(data["name"], json.dumps(arguments, ensure_ascii=False))


class CallSplitter:
    """Splits streamed text into content and tool calls, holding back a partial ``<tool_call>``.

    Whitespace between calls is not content; a block that is not a valid call stays text.
    """

    def __init__(self, calls: ToolCalls) -> None:
        self._names = calls.names
        self._buffer = ""
        self._inside = False
        self._blank = ""  # whitespace held back: content only if more text follows
        self.n_calls = 0

    def push(self, text: str) -> Iterator[str | ParsedCall]:
        """Content pieces and calls that ``text`` completes."""
        self._buffer += text
        while True:
            mark = CLOSE if self._inside else OPEN
            at = self._buffer.find(mark)
            if at < 0:
                break
            head, self._buffer = self._buffer[:at], self._buffer[at + len(mark) :]
            if self._inside:
                yield from self._block(head)
            else:
                yield from self._content(head)
            self._inside = not self._inside
        if not self._inside:
            keep = _partial_suffix(self._buffer, OPEN)
            ready, self._buffer = (
                self._buffer[: len(self._buffer) - keep],
                self._buffer[-keep:] if keep else "",
            )
            yield from self._content(ready)

    def flush(self) -> Iterator[str]:
        """What is left at the end, as text (an unclosed block was no call)."""
        rest = f"{OPEN}{self._buffer}" if self._inside else self._buffer
        self._buffer, self._inside = "", False
        for item in self._content(rest, final=True):
            assert isinstance(item, str)
            yield item

    def _block(self, inner: str) -> Iterator[str | ParsedCall]:
        call = parse_call(inner.strip(), self._names)
        if call is None:
            yield from self._content(f"{OPEN}{inner}{CLOSE}")
            return
        self._blank = ""
        self.n_calls += 1
        yield call

    def _content(self, text: str, *, final: bool = False) -> Iterator[str | ParsedCall]:
        # Trailing whitespace waits: it is content only if more text follows (not a call).
        if not text:
            return
        body = text.rstrip()
        if body:
            yield self._blank + body
            self._blank = ""
        self._blank += text[len(body) :]
        if final and self._blank and not self.n_calls:
            yield self._blank
            self._blank = ""


def _partial_suffix(text: str, mark: str) -> int:
    """Length of the longest end of ``text`` that starts ``mark``."""
    for n in range(min(len(text), len(mark) - 1), 0, -1):
        if mark.startswith(text[-n:]):
            return n
    return 0


async def split_tool_calls(
    stream: AsyncIterator[str | Finished], calls: ToolCalls
) -> AsyncIterator[str | ParsedCall | Finished]:
    """``stream`` with tool calls parsed out; the end says ``tool_calls`` when there were any.

    Logprobs stay with the content text; those of a call's own tokens are dropped (OpenAI
    reports logprobs for content only).
    """
    splitter = CallSplitter(calls)
    pending: list[TokenLogprob] = []
    async for item in stream:
        if not isinstance(item, Finished):
            pending.extend(logprobs_of(item))
            for out in splitter.push(item):
                if isinstance(out, ParsedCall):
                    pending.clear()
                    yield out
                elif pending:
                    yield LoggedPiece(out, pending)
                    pending = []
                else:
                    yield out
            continue
        for text in splitter.flush():
            yield LoggedPiece(text, pending) if pending else text
            pending = []
        if splitter.n_calls and item.reason == "stop":
            item = replace(item, reason="tool_calls")
        yield replace(item, logprobs=(*pending, *item.logprobs))


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
