"""JSON Schema -> GBNF: llama-cpp-python's converter, extended with the keywords it skips.

``llama_cpp.llama_grammar.SchemaConverter`` (a port of llama.cpp's
``json_schema_to_grammar.py``) handles objects, arrays, ``$ref`` (recursive ones included),
``anyOf``/``oneOf``, ``enum``/``const``, ``pattern``, lengths and item counts. This subclass
adds what it leaves out, so that the grammar enforces it while generating:

- integer ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum`` (digit by digit)
  and ``multipleOf`` up to ``json_numbers.MAX_MODULUS`` (a remainder automaton);
- number bounds (sign and integer part, the fraction bounded at the edges; see
  ``json_numbers``);
- ``format`` date, time, date-time, duration, email, hostname, ipv4, ipv6, uuid;
- ``allOf``, merged into one object schema (properties and ``required`` joined).

What it still cannot enforce is listed by ``app.serving.json_schema`` and checked on the
finished reply instead.
"""

from __future__ import annotations

from typing import Any

from llama_cpp.llama_grammar import (  # noqa: TID251 - the llama_cpp boundary
    RESERVED_NAMES,
    BuiltinRule,
    SchemaConverter,
)

from app.engine.json_formats import FORMATS
from app.engine.json_numbers import (
    bounds,
    integer_range,
    modulus_enforced,
    multiple_of,
    number_range,
)

_NUMERIC = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


_BASE: Any = SchemaConverter  # untyped Python from llama-cpp-python: its methods, typed Any

# llama-cpp-python's "char" is [^"\\], which lets raw control characters into a JSON string
# (JSON forbids them unescaped: json.loads refuses the reply); llama.cpp's own converter
# excludes them, and so does this one.
_JSON_CHAR = BuiltinRule(
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" '
    r"[0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])",
    [],
)


class Converter(SchemaConverter):
    """The extended converter (one per grammar: it accumulates rules)."""

    def __init__(self) -> None:
        # prop_order {}: keep the schema's property order; never fetch remote schemas.
        _BASE.__init__(self, prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)

    def visit(self, schema: dict[str, Any], name: str) -> str:
        """The rule name for ``schema`` (adding its rules)."""
        if not isinstance(schema, dict):
            return str(_BASE.visit(self, schema, name))
        rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
        if any(key in schema for key in ("$ref", "anyOf", "oneOf", "const", "enum")):
            return str(_BASE.visit(self, schema, name))
        if "allOf" in schema:
            return self.visit(self._merged(schema), name)
        kind = schema.get("type")
        if kind is None and any(k in schema for k in _NUMERIC):
            kind = "number"  # numbers within the bounds (other values would pass: a subset)
        rule = None
        if kind == "integer":
            rule = self._integer(schema)
        elif kind == "number":
            rule = self._number(schema)
        elif kind in (None, "string") and "pattern" not in schema:
            rule = self._format(schema)
        if rule is None and kind in ("string", "array"):
            rule = self._counted(schema, kind, name)
        if rule is not None:
            return str(_BASE._add_rule(self, rule_name, rule))
        return str(_BASE.visit(self, schema, name))

    def _add_primitive(self, name: str, rule: Any) -> str:
        return str(_BASE._add_primitive(self, name, _JSON_CHAR if name == "char" else rule))

    def _integer(self, schema: dict[str, Any]) -> str | None:
        low, high = bounds(schema)
        if low is not None or high is not None:
            found = integer_range(low, high)
            if found is None:
                raise ValueError("no integer lies within minimum/maximum")
            return f"({found}) space"
        modulus = schema.get("multipleOf")
        if modulus_enforced(modulus):
            assert isinstance(modulus, int)
            for rule, body in multiple_of(modulus).items():
                _BASE._add_rule(self, rule, body)
            return f"mod{modulus} space"
        return None

    def _number(self, schema: dict[str, Any]) -> str | None:
        low, high = bounds(schema)
        if low is None and high is None:
            return None
        found, _exact = number_range(low, high)
        if found is None:
            raise ValueError("no number lies within minimum/maximum")
        return f"({found}) space"

    def _counted(self, schema: dict[str, Any], kind: str, name: str) -> str | None:
        """A string's ``minLength``/``maxLength`` or an array's ``minItems``/``maxItems`` as
        GBNF ``{m,n}`` of a named rule (as llama.cpp's own converter writes them). The base
        converter nests n optional groups instead, ``(x (x (x)?)?)?``: past 256 levels the
        grammar guard refused counts the schema limits allow (up to 2,000). What repeats is
        always a rule reference: llama.cpp refuses ``(group){0,n}`` when the group's rules
        times n pass 2,000, and counts rules first named inside the group."""
        if kind == "string" and "format" not in schema and "pattern" not in schema:
            low, high = schema.get("minLength", 0), schema.get("maxLength")
            if (low, high) == (0, None):
                return None
            char = self._add_primitive("char", None)
            return f'"\\"" {_repeat(char, low, high)} "\\"" space'
        items = schema.get("items")
        if kind != "array" or not isinstance(items, dict) or "prefixItems" in schema:
            return None
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        if (low, high) == (0, None):
            return None
        rule_name = name or "root"
        item = self.visit(items, f"{name}{'-' if name else ''}item")
        if high is not None and high <= 0:
            return '"[" space "]" space'
        seq = item
        more_high = None if high is None else high - 1
        if more_high != 0:
            more = str(_BASE._add_rule(self, f"{rule_name}-more", f'"," space {item}'))
            seq = f"{item} {_repeat(more, max(low - 1, 0), more_high)}"
        if low == 0:
            seq = str(_BASE._add_rule(self, f"{rule_name}-items", seq)) + "?"
        return f'"[" space {seq} "]" space'

    def _format(self, schema: dict[str, Any]) -> str | None:
        fmt = schema.get("format")
        if not isinstance(fmt, str):
            return None
        body = FORMATS.get("uuid" if fmt.startswith("uuid") else fmt)
        if body is None:
            return None
        return f'"\\"" ({body}) "\\"" space'

    def _merged(self, schema: dict[str, Any]) -> dict[str, Any]:
        """``allOf`` folded into one schema: properties and ``required`` joined, other
        keywords taken from the first part that has them (the schema's own first)."""
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        properties: dict[str, Any] = dict(merged.pop("properties", {}) or {})
        required: list[str] = list(merged.pop("required", []) or [])
        for part in schema["allOf"]:
            part = self._deref(part)
            if "allOf" in part:
                part = self._merged(part)
            for key, value in (part.get("properties") or {}).items():
                properties.setdefault(key, value)
            required += [r for r in part.get("required") or [] if r not in required]
            for key, value in part.items():
                if key not in ("properties", "required", "$ref", "$defs", "definitions"):
                    merged.setdefault(key, value)
        if properties:
            merged["properties"] = properties
            merged.setdefault("type", "object")
        if required:
            merged["required"] = required
        return merged

    def resolve_refs(self, schema: Any, url: str) -> Any:
        """Point every local ``$ref`` of ``schema`` at its target (in ``self._refs``).

        Replaces the base class's version, which misses a reference met again inside its
        own target (a recursive schema such as a tree). Remote references are refused
        before this (``app.serving.json_schema``).
        """
        stack, seen = [schema], set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, list):
                stack.extend(node)
                continue
            if not isinstance(node, dict):
                continue
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#"):
                key = f"{url}{ref}"
                if key not in self._refs:
                    self._refs[key] = _pointer(schema, ref)
                node["$ref"] = key
            stack.extend(node.values())
        return schema

    def _deref(self, part: Any) -> dict[str, Any]:
        seen = 0
        while isinstance(part, dict) and isinstance(part.get("$ref"), str) and seen < 32:
            part, seen = self._refs[part["$ref"]], seen + 1
        return part if isinstance(part, dict) else {}


def _repeat(item: str, low: int, high: int | None) -> str:
    """``item`` repeated ``low`` to ``high`` (None: no bound) times, in GBNF."""
    if (low, high) == (0, None):
        return f"{item}*"
    return f"{item}{{{low},{'' if high is None else high}}}"


def _pointer(schema: Any, ref: str) -> Any:
    target = schema
    for part in ref.lstrip("#").split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        elif isinstance(target, dict) and part in target:
            target = target[part]
        else:
            raise ValueError(f"$ref {ref} points at nothing")
    return target


def schema_rules(converter: Converter, schema: Any, name: str) -> str:
    """Add the rules for ``schema`` under ``name``; the rule name that matches it."""
    resolved = converter.resolve_refs(schema, name)
    return converter.visit(resolved, name)


def new_converter() -> Any:
    """A converter, typed ``Any`` (its base class is untyped)."""
    return Converter()
