"""Llama 3.1-3.3: a bare ``{"name": ..., "parameters": {...}}`` reply, or ``<|python_tag|>``.

The templates put the tools in the first user message (3.1/3.3) or the system message (3.2)
and ask for ``{"name": function name, "parameters": dictionary of argument name and its
value}``. ``<|python_tag|>`` opens a call too (built-in tools and some fine-tunes). Several
calls are separated by ``;``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from app.serving.tool_formats.base import (
    ParsedCall,
    ToolFormat,
    gbnf_literal,
    json_call,
    json_partial,
)

ARGS_KEYS = ("parameters", "arguments")


class Llama3Format(ToolFormat):
    """Bare JSON calls (the whole reply), ``;``-separated."""

    name: ClassVar[str] = "llama3"
    markers: ClassVar[tuple[str, ...]] = ("<|start_header_id|>", '"parameters"', "tools")
    special_markers: ClassVar[bool] = True
    open: ClassVar[str] = "<|python_tag|>"
    close: ClassVar[str] = ""
    extra_opens: ClassVar[tuple[str, ...]] = ('{"name"', '{"type"')
    skip: ClassVar[tuple[str, ...]] = ("<|eom_id|>",)
    lazy: ClassVar[bool] = False  # bare JSON has no marker to trigger on

    def parse_block(self, block: str, names: frozenset[str]) -> list[ParsedCall] | None:
        """``;``-separated JSON calls filling the block."""
        decoder, calls, at = json.JSONDecoder(), [], 0
        text = block.strip()
        while at < len(text):
            try:
                data, end = decoder.raw_decode(text, at)
            except json.JSONDecodeError:
                return None
            call = json_call(data, names, args_keys=ARGS_KEYS)
            if call is None:
                return None
            calls.append(call)
            at = end
            while at < len(text) and text[at] in " \n;":
                at += 1
        return calls or None

    def partial(self, block: str) -> tuple[str, str] | None:
        """Name and arguments so far (the first call of a block)."""
        return json_partial(block, ARGS_KEYS)

    def grammar_open(self) -> str:
        """Forced calls start as bare JSON."""
        return ""

    def call_gbnf(self, name: str, args_rule: str) -> str:
        """``{"name": "x", "parameters": {...}}``."""
        return (
            f'"{{" space "\\"name\\"" space ":" space {gbnf_literal(json.dumps(name))} space '
            f'"," space "\\"parameters\\"" space ":" space {args_rule} "}}"'
        )

    def separator(self) -> str:
        """Calls are separated by ``;``."""
        return "; "

    def write_calls(self, calls: Sequence[Mapping[str, Any]]) -> str:
        """The calls as the model writes them."""
        return "; ".join(
            json.dumps({"name": c["name"], "parameters": c["arguments"]}, ensure_ascii=False)
            for c in calls
        )
