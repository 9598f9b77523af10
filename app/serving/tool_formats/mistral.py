"""Mistral: ``[TOOL_CALLS]`` in its two shapes, and 9-character call ids in the history.

Nemo (and Small 3.0/3.1): ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``.
Small 3.2, Devstral, Magistral: ``[TOOL_CALLS]name[ARGS]{...}`` once per call (the history
also carries ``[CALL_ID]id``, which the parser accepts). Mistral templates refuse call ids
that are not 9 letters and digits, so the history's ids are mapped to such ids (the same id
always to the same one, so a call and its result still match).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from app.serving.tool_formats.base import (
    ParsedCall,
    ToolFormat,
    arguments_json,
    gbnf_literal,
    json_call,
    json_partial,
    json_value_prefix,
)

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def mistral_id(call_id: str | None) -> str | None:
    """A 9-character alphanumeric id standing for ``call_id`` (kept if it already is one)."""
    if call_id is None or re.fullmatch(r"[a-zA-Z0-9]{9}", call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:9])


class MistralFormat(ToolFormat):
    """Nemo's ``[TOOL_CALLS]`` JSON array."""

    name: ClassVar[str] = "mistral"
    markers: ClassVar[tuple[str, ...]] = ("[TOOL_CALLS]", "[AVAILABLE_TOOLS]")
    special_markers: ClassVar[bool] = True
    open: ClassVar[str] = "[TOOL_CALLS]"
    close: ClassVar[str] = ""

    def parse_block(self, block: str, names: frozenset[str]) -> list[ParsedCall] | None:
        """The calls of the JSON array (or one object)."""
        try:
            data = json.loads(block)
        except json.JSONDecodeError:
            return None
        items = data if isinstance(data, list) else [data]
        calls = [json_call(item, names, args_keys=("arguments",)) for item in items]
        return None if not calls or None in calls else [c for c in calls if c is not None]

    def partial(self, block: str) -> tuple[str, str] | None:
        """Name and arguments so far (the first call)."""
        return json_partial(block, ("arguments",))

    def call_gbnf(self, name: str, args_rule: str) -> str:
        """``[{"name": "x", "arguments": {...}}]``."""
        return (
            f'"[" space "{{" space "\\"name\\"" space ":" space {gbnf_literal(json.dumps(name))} '
            f'space "," space "\\"arguments\\"" space ":" space {args_rule} "}}" space "]"'
        )

    def history_id(self, call_id: str | None) -> str | None:
        """Mistral's 9-character ids."""
        return mistral_id(call_id)

    def write_calls(self, calls: Sequence[Mapping[str, Any]]) -> str:
        """The calls as the model writes them."""
        return self.open + json.dumps(list(calls), ensure_ascii=False)


class MistralArgsFormat(MistralFormat):
    """Small 3.2 / Devstral / Magistral: ``[TOOL_CALLS]name[ARGS]{...}``."""

    name: ClassVar[str] = "mistral-args"
    markers: ClassVar[tuple[str, ...]] = ("[TOOL_CALLS]", "[ARGS]")

    def parse_block(self, block: str, names: frozenset[str]) -> list[ParsedCall] | None:
        """``name[ARGS]{...}`` (an optional ``[CALL_ID]id`` after the name)."""
        head, sep, args = block.partition("[ARGS]")
        name = head.split("[CALL_ID]")[0].strip()
        arguments = arguments_json(args.strip()) if sep else None
        if name not in names or arguments is None:
            return None
        return [ParsedCall(name, arguments)]

    def partial(self, block: str) -> tuple[str, str] | None:
        """Name once ``[ARGS]`` follows it, then the arguments so far."""
        head, sep, args = block.partition("[ARGS]")
        if not sep:
            return None
        return head.split("[CALL_ID]")[0].strip(), json_value_prefix(args.lstrip())

    def call_gbnf(self, name: str, args_rule: str) -> str:
        """``name[ARGS]{...}``."""
        return f"{gbnf_literal(name + '[ARGS]')} {args_rule}"

    def separator(self) -> str:
        """Calls follow each other directly."""
        return ""

    def write_calls(self, calls: Sequence[Mapping[str, Any]]) -> str:
        """The calls as the model writes them."""
        return "".join(
            f"{self.open}{c['name']}[ARGS]{json.dumps(c['arguments'], ensure_ascii=False)}"
            for c in calls
        )
