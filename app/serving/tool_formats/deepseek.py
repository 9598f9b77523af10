"""DeepSeek R1 / V3 and V3.1 call blocks between ``<｜tool▁call▁begin｜>`` and ``…end｜>``.

R1 and V3: ``function<｜tool▁sep｜>name`` then the arguments in a fenced json block.
V3.1 and later: ``name<｜tool▁sep｜>{...}``. Both sit inside ``<｜tool▁calls▁begin｜>`` …
``<｜tool▁calls▁end｜>``, which the parser drops.
"""

# ruff: noqa: RUF001, RUF002 - DeepSeek's markers are written with fullwidth bars
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from app.serving.tool_formats.base import (
    ParsedCall,
    ToolFormat,
    arguments_json,
    gbnf_literal,
    json_value_prefix,
)

CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
SEP = "<｜tool▁sep｜>"
FENCE = "```json\n"


def _split(block: str) -> tuple[str, str] | None:
    """(name, text after it) of a block in either shape."""
    head, sep, rest = block.partition(SEP)
    if not sep:
        return None
    if head.strip() == "function":  # R1 / V3: the name starts the rest
        name, _, rest = rest.partition("\n")
        return name.strip(), rest.strip().removeprefix("```json").removeprefix("```").lstrip()
    return head.strip(), rest.lstrip()


class DeepSeekFormat(ToolFormat):
    """R1 / V3 (fenced JSON arguments)."""

    name: ClassVar[str] = "deepseek"
    markers: ClassVar[tuple[str, ...]] = ("<｜tool▁call▁begin｜>", "```json")
    special_markers: ClassVar[bool] = True
    open: ClassVar[str] = "<｜tool▁call▁begin｜>"
    close: ClassVar[str] = "<｜tool▁call▁end｜>"
    skip: ClassVar[tuple[str, ...]] = (CALLS_BEGIN, CALLS_END)

    def parse_block(self, block: str, names: frozenset[str]) -> list[ParsedCall] | None:
        """The call in a block."""
        found = _split(block)
        if found is None or found[0] not in names:
            return None
        arguments = arguments_json(found[1].removesuffix("```").strip())
        return None if arguments is None else [ParsedCall(found[0], arguments)]

    def partial(self, block: str) -> tuple[str, str] | None:
        """Name and arguments so far."""
        found = _split(block)
        if found is None or not found[1].startswith("{"):
            return None
        return found[0], json_value_prefix(found[1])

    def grammar_open(self) -> str:
        """A forced call opens the calls section too."""
        return CALLS_BEGIN + self.open

    def call_gbnf(self, name: str, args_rule: str) -> str:
        """``function<｜tool▁sep｜>name`` and fenced arguments."""
        head = gbnf_literal(f"function{SEP}{name}\n{FENCE}")
        tail = gbnf_literal(f"\n```{self.close}{CALLS_END}")
        return f"{head} {args_rule} {tail}"

    def write_calls(self, calls: Sequence[Mapping[str, Any]]) -> str:
        """The calls as the model writes them."""
        return (
            CALLS_BEGIN
            + "".join(
                f"{self.open}function{SEP}{c['name']}\n{FENCE}"
                f"{json.dumps(c['arguments'], ensure_ascii=False)}\n```{self.close}"
                for c in calls
            )
            + CALLS_END
        )


class DeepSeekV31Format(DeepSeekFormat):
    """V3.1 and later (``name<｜tool▁sep｜>{...}``)."""

    name: ClassVar[str] = "deepseek-v3.1"
    markers: ClassVar[tuple[str, ...]] = ("<｜tool▁call▁begin｜>",)

    def call_gbnf(self, name: str, args_rule: str) -> str:
        """``name<｜tool▁sep｜>{...}``."""
        tail = gbnf_literal(f"{self.close}{CALLS_END}")
        return f"{gbnf_literal(name + SEP)} {args_rule} {tail}"

    def write_calls(self, calls: Sequence[Mapping[str, Any]]) -> str:
        """The calls as the model writes them."""
        return (
            CALLS_BEGIN
            + "".join(
                f"{self.open}{c['name']}{SEP}{json.dumps(c['arguments'], ensure_ascii=False)}"
                f"{self.close}"
                for c in calls
            )
            + CALLS_END
        )
