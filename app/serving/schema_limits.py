"""Cost limits of a JSON Schema, checked before it is converted to a grammar.

The converter writes ``minItems: n`` as n copies of the item rule and ``{m,n}`` in a
``pattern`` as n copies too, and every ``enum`` value is one grammar alternative that
llama.cpp matches against every token: a 200-byte schema could otherwise cost seconds and
hundreds of megabytes. The walk below is linear in the schema and runs before any of that.
llama.cpp's own converter bounds repetitions at 2,000; so do we.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SchemaLimit:
    """One limit: its name (in the error), its value, and what it bounds."""

    name: str
    value: int
    why: str


MAX_REPETITION = SchemaLimit(
    "max_repetition",
    2_000,
    "minItems/maxItems/minLength/maxLength and a pattern's {m,n}: each is expanded into copies",
)
MAX_TOTAL_REPETITION = SchemaLimit(
    "max_total_repetition", 10_000, "all the repetition counts of one schema together"
)
MAX_ENUM_VALUES = SchemaLimit(
    "max_enum_values", 1_000, "values of one enum (each is a grammar alternative)"
)
MAX_TOTAL_ENUM_VALUES = SchemaLimit(
    "max_total_enum_values", 4_000, "enum values of one schema together"
)
MAX_SCHEMA_NODES = SchemaLimit(
    "max_schema_nodes", 20_000, "objects, arrays and values of one schema (its size)"
)

TABLE: tuple[SchemaLimit, ...] = (
    MAX_REPETITION,
    MAX_TOTAL_REPETITION,
    MAX_ENUM_VALUES,
    MAX_TOTAL_ENUM_VALUES,
    MAX_SCHEMA_NODES,
)
"""Every schema limit (for the README's limits table)."""

_COUNTS = ("minItems", "maxItems", "minLength", "maxLength", "minContains", "maxContains")
_BRACES = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def over_limit(schema: Any) -> str | None:
    """Why ``schema`` costs too much to convert (naming the limit and where), or None."""
    nodes = repetitions = enum_values = 0
    for path, node in _walk(schema):
        nodes += 1
        if nodes > MAX_SCHEMA_NODES.value:
            return _message(MAX_SCHEMA_NODES, f"more than {MAX_SCHEMA_NODES.value} nodes", "")
        if not isinstance(node, dict):
            continue
        for key, count in _counts(node):
            if count > MAX_REPETITION.value:
                return _message(MAX_REPETITION, f"{key} {count}", path)
            repetitions += count
            if repetitions > MAX_TOTAL_REPETITION.value:
                return _message(MAX_TOTAL_REPETITION, f"{key} {count} brings the total over", path)
        values = node.get("enum")
        if isinstance(values, list):
            if len(values) > MAX_ENUM_VALUES.value:
                return _message(MAX_ENUM_VALUES, f"enum of {len(values)} values", path)
            enum_values += len(values)
            if enum_values > MAX_TOTAL_ENUM_VALUES.value:
                return _message(MAX_TOTAL_ENUM_VALUES, f"{enum_values} enum values", path)
    return None


def _message(limit: SchemaLimit, what: str, path: str) -> str:
    where = f" (at {path})" if path else ""
    return (
        f"The JSON schema is over the limit {limit.name} ({limit.value}): {what}{where}; "
        f"{limit.why}."
    )


def _counts(node: dict[str, Any]) -> Iterator[tuple[str, int]]:
    for key in _COUNTS:
        value = node.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            yield key, value
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        for match in _BRACES.finditer(pattern):
            low, high = match.group(1), match.group(2)
            yield "pattern " + match.group(0), max(int(low), int(high or 0))


def _walk(schema: Any) -> Iterator[tuple[str, Any]]:
    """Every node with a dotted path, depth first, without recursion."""
    stack: list[tuple[str, Any]] = [("", schema)]
    while stack:
        path, node = stack.pop()
        yield path, node
        prefix = f"{path}." if path else ""
        if isinstance(node, dict):
            stack.extend((f"{prefix}{k}", v) for k, v in node.items() if k not in ("enum", "const"))
        elif isinstance(node, list):
            stack.extend((f"{prefix}[{i}]", v) for i, v in enumerate(node))
