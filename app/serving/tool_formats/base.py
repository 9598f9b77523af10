"""What every tool-call format is made of: calls, stream events, the strategy base class.

A format (one module each in this package) knows how one model family writes a call
(``<tool_call>`` JSON, ``[TOOL_CALLS]``, ``<function=...>`` XML, ...): the markers that open
and close a call block, how to read the calls in a block, how to write a forced call as a
GBNF grammar in the family's own syntax, and how earlier calls of the history are handed to
the family's template. The streaming splitter (``splitter.py``) is shared by all of them.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from app.engine.types import Grammar, JsonRule
from app.schemas.tools import FunctionDefinition, ToolDefinition
from app.serving.json_schema import canonical_schema, enforceable_schema

logger = logging.getLogger(__name__)

ANY_OBJECT: dict[str, Any] = {"type": "object"}


def new_call_id() -> str:
    """An OpenAI-style call id."""
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ParsedCall:
    """One tool call found in the reply (``arguments`` is JSON text, as OpenAI sends it)."""

    name: str
    arguments: str
    id: str = field(default_factory=new_call_id)


@dataclass(frozen=True)
class CallDelta:
    """A piece of a call still being generated: its name first, then argument text.

    The pieces of one call (same ``index``) join into the arguments of the ``ParsedCall``
    that ends it, so a client may stream them as OpenAI's ``delta.tool_calls``.
    """

    index: int
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolSpec:
    """The tools a grammar may call, with ``forced`` (required/named) and ``parallel``."""

    tools: tuple[ToolDefinition, ...]
    forced: bool
    parallel: bool


def arguments_json(value: Any) -> str | None:
    """A call's arguments as JSON text: an object as is, a JSON string decoded; None if neither."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, dict):
        return None
    return json.dumps(value, ensure_ascii=False)


def json_call(data: Any, names: frozenset[str], *, args_keys: Sequence[str]) -> ParsedCall | None:
    """The call in a decoded ``{"name": ..., <args key>: {...}}`` object; None if it is not one."""
    if not isinstance(data, dict) or data.get("name") not in names:
        return None
    raw: Any = next((data[key] for key in args_keys if key in data), {})
    arguments = arguments_json(raw)
    return None if arguments is None else ParsedCall(data["name"], arguments)


def args_rules(spec: ToolSpec) -> tuple[list[JsonRule], list[str]]:
    """One JSON-Schema rule per tool (``tool-args-i``) and the tools' names."""
    rules = [
        JsonRule(f"tool-args-{i}", arguments_schema(t.function)) for i, t in enumerate(spec.tools)
    ]
    return rules, [t.function.name for t in spec.tools]


def arguments_schema(function: FunctionDefinition, schema: Any = None) -> str:
    """The schema a call's arguments (or ``schema``, a part of them) are generated under:
    exactly the tool's when it is ``strict`` (a 400 for what the grammar cannot enforce),
    else the part of it the grammar can enforce (the model still reads the whole schema in
    the prompt)."""
    if schema is None:
        schema = function.parameters or ANY_OBJECT
    if not function.strict:
        schema, dropped = enforceable_schema(schema)
        if dropped:
            logger.debug("tool %s: not enforced: %s", function.name, "; ".join(dropped))
    # A strict tool's arguments are not checked after generation: what the grammar cannot
    # enforce is a 400 rather than silently dropped.
    return canonical_schema(schema, param="tools", strict=bool(function.strict))


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class ToolFormat:
    """One family's call syntax; subclasses set the markers and override what differs.

    ``markers``: strings the family's template contains (all of them) — how the format is
    detected. ``open``/``close``: the text around one call block (``close`` empty: the block
    runs to the next ``open`` or the end of the reply). ``trigger``: where a lazy grammar
    (``tool_choice: auto``) takes over.
    """

    name: ClassVar[str] = ""
    markers: ClassVar[tuple[str, ...]] = ()
    open: ClassVar[str] = ""
    close: ClassVar[str] = ""
    extra_opens: ClassVar[tuple[str, ...]] = ()  # more texts that start a block (Llama's JSON)
    skip: ClassVar[tuple[str, ...]] = ()  # wrapper markers dropped between calls
    native: ClassVar[bool] = True  # the template renders ``tools`` itself
    lazy: ClassVar[bool] = True  # ``tool_choice: auto`` gets a grammar triggered by ``open``
    special_markers: ClassVar[bool] = False  # the markers are control tokens in the vocabulary

    @classmethod
    def detect(cls, template: str) -> bool:
        """Whether ``template`` asks for this format."""
        return bool(cls.markers) and all(marker in template for marker in cls.markers)

    def bind(self, spec: ToolSpec) -> ToolFormat:
        """This format for a request's tools (formats that read parameter types override it)."""
        return self

    def parse_block(self, block: str, names: frozenset[str]) -> list[ParsedCall] | None:
        """The calls in the text between ``open`` and ``close``; None if it is not calls."""
        raise NotImplementedError

    def partial(self, block: str) -> tuple[str, str] | None:
        """(name, the arguments text known for sure) of a block still being generated."""
        return None

    def grammar(self, spec: ToolSpec) -> Grammar | None:
        """A GBNF grammar for calls in this syntax; lazy (triggered) unless ``spec.forced``.

        A forced reply is exactly the calls (one unless ``spec.parallel``), so it ends
        cleanly after them; a lazy grammar takes over once the model writes ``open``.
        """
        lazy = not spec.forced
        if lazy and not (self.lazy and self.open):
            return None
        rules, names = args_rules(spec)
        alternatives = [self.call_gbnf(name, f"tool-args-{i}") for i, name in enumerate(names)]
        more = " (tc-sep tc-call)*" if spec.parallel else ""
        lines = [
            f"root ::= {'tc-rest' if lazy else 'tc-call'}{more}",
            f"tc-call ::= {gbnf_literal(self.grammar_open())} tc-rest".replace('"" ', ""),
            "tc-rest ::= " + " | ".join(f"tc-{i}" for i in range(len(alternatives))),
            *(f"tc-{i} ::= {alt}" for i, alt in enumerate(alternatives)),
            f"tc-sep ::= {gbnf_literal(self.separator())}",
        ]
        return Grammar(
            "\n".join(lines), tuple(rules), trigger=self.open if lazy else "", param="tools"
        )

    def grammar_open(self) -> str:
        """What a forced call starts with."""
        return self.open

    def separator(self) -> str:
        """What goes between two calls."""
        return "\n"

    def call_gbnf(self, name: str, args_rule: str) -> str:
        """GBNF for one call of ``name`` after ``open`` (up to and with ``close``)."""
        raise NotImplementedError

    def history_call(self, call_id: str, name: str, arguments: Any) -> dict[str, Any]:
        """One assistant ``tool_calls`` entry as this family's template reads it."""
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }

    def history_id(self, call_id: str | None) -> str | None:
        """A call id as this family's template wants it (Mistral: 9 letters and digits)."""
        return call_id

    def write_calls(self, calls: Sequence[Mapping[str, Any]]) -> str:
        """Calls written as reply text (for templates that do not render ``tool_calls``)."""
        raise NotImplementedError


_NAME = re.compile(r'"name"\s*:\s*"([^"\\]+)"')


def json_partial(block: str, args_keys: Sequence[str]) -> tuple[str, str] | None:
    """(name, the raw arguments text so far) of a ``{"name": ..., "arguments": {...`` block."""
    name = _NAME.search(block)
    if name is None:
        return None
    for key in args_keys:
        found = re.search(rf'"{key}"\s*:\s*', block)
        if found and block[found.end() : found.end() + 1] == "{":
            return name.group(1), json_value_prefix(block[found.end() :])
    return name.group(1), ""


def json_value_prefix(text: str) -> str:
    """The JSON object at the start of ``text``: whole if it closes there, else what there is."""
    depth, in_string, escaped = 0, False, False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return text[: i + 1]
    return text
