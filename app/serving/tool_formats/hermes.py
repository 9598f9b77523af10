"""Hermes / Qwen 2.5-3: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

The template renders ``tools`` itself (Qwen 2.5, Qwen3, QwQ, Hermes 2 Pro / 3, SmolLM3).
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

ARGS_KEYS = ("arguments", "parameters")


class HermesFormat(ToolFormat):
    """``<tool_call>`` blocks of JSON."""

    name: ClassVar[str] = "hermes"
    markers: ClassVar[tuple[str, ...]] = ("<tool_call>", "tools")
    open: ClassVar[str] = "<tool_call>"
    close: ClassVar[str] = "</tool_call>"

    def parse_block(self, block: str, names: frozenset[str]) -> list[ParsedCall] | None:
        """The one JSON call in a block."""
        try:
            data = json.loads(block)
        except json.JSONDecodeError:
            return None
        call = json_call(data, names, args_keys=ARGS_KEYS)
        return None if call is None else [call]

    def partial(self, block: str) -> tuple[str, str] | None:
        """Name and arguments so far."""
        return json_partial(block, ARGS_KEYS)

    def call_gbnf(self, name: str, args_rule: str) -> str:
        """``{"name": "x", "arguments": {...}}`` then the close tag."""
        return (
            f'"\\n"? "{{" space "\\"name\\"" space ":" space {gbnf_literal(json.dumps(name))} '
            f'space "," space "\\"arguments\\"" space ":" space {args_rule} "}}" space '
            f'"\\n"? {gbnf_literal(self.close)}'
        )

    def write_calls(self, calls: Sequence[Mapping[str, Any]]) -> str:
        """``<tool_call>`` blocks."""
        return "\n".join(
            f"{self.open}\n{json.dumps(c, ensure_ascii=False)}\n{self.close}" for c in calls
        )


class GenericFormat(HermesFormat):
    """The fallback for templates without tool support: Hermes blocks, tools in the system
    message, earlier calls written back as text and results as ``<tool_response>`` turns."""

    name: ClassVar[str] = "generic"
    markers: ClassVar[tuple[str, ...]] = ()
    native: ClassVar[bool] = False
