"""An engine ``Grammar`` with JSON Schema rules -> an llguidance (Lark) grammar.

Each JSON rule becomes ``name: %json {schema}``, compiled by llguidance's own JSON Schema
compiler. The GBNF around them (a tool-call format's markers, a reasoning block before
the answer) is parsed with llguidance's GBNF reader and written back as Lark with every
rule a parser rule: GBNF matches characters with no lexer, while a Lark terminal is a
greedy lexeme (``[^<]*`` before ``"\\n</parameter>"`` would eat the newline the literal
needs), so only literals and character classes become lexemes, as short as GBNF's own.

The schemas are the ones serving already checked and bounded (``--json-max-items``,
``--json-max-string``: our limits apply first). A few defaults follow the fallback
converter rather than the JSON Schema spec, so a reply looks the same whichever engine made
it and a small model finishes its values: an object with ``properties`` and no
``additionalProperties`` takes no other keys (not where ``allOf`` merges parts, which would
make it unsatisfiable); whitespace between tokens is at most one space; a number side
without a bound stops at 16 digits and a fraction at 9 (``multipleOf`` 1e-9); and the
string formats are ours (``json_formats``, as regular expressions): subsets that
``jsonschema`` and pydantic's ``EmailStr`` accept, short enough to finish. These only
narrow what a reply may be: a reply still validates against the schema the client sent.

A grammar without JSON rules (a user's raw GBNF) is not converted: it stays on llama.cpp's
grammar sampler, which reads every GBNF it accepts exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from llguidance import gbnf_to_lark as _gbnf

from app.engine.json_formats import FORMATS
from app.engine.types import Grammar

# As llama-cpp-python's converter: what wrapper grammars mean by ``space``.
SPACE_RULE = 'space ::= " "?'
JSON_OPTIONS = {"whitespace_pattern": " ?"}
NUMBER_LIMIT = 10**16 - 1  # 16 digits, as llama.cpp's own JSON grammar
FRACTION = 1e-9  # nine fraction digits (llguidance reads multipleOf as a float: 1e-15 is off)
_GBNF_PART = re.compile(r'"((?:[^"\\]|\\.)*)"|\s+|([^"\s]+)')


def _regex(gbnf: str) -> str:
    """A regular expression for one of ``json_formats``' GBNF expressions (literals,
    classes, groups, ``|``, ``?`` and ``{m,n}`` only: the two syntaxes then agree)."""
    parts = []
    for literal, other in _GBNF_PART.findall(gbnf):
        parts.append(re.escape(literal) if literal else other)
    return "".join(parts)


# Our format grammars, not llguidance's: each is a subset that jsonschema's (and pydantic's
# EmailStr's) checks accept, kept short (llguidance's email takes "a/b@c").
FORMAT_PATTERNS = {name: f"^({_regex(gbnf)})$" for name, gbnf in FORMATS.items()}
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def to_lark(grammar: Grammar, markers: Mapping[str, int] | None = None) -> str | None:
    """The llguidance grammar for ``grammar``; None when it has no JSON rules (raw GBNF).

    Raises ``ValueError`` (or the GBNF reader's own errors) when the GBNF part cannot be
    read: the caller then keeps the grammar on llama.cpp.
    """
    if not grammar.json_rules:
        return None
    schemas = {rule.name: rule.schema for rule in grammar.json_rules}
    return gbnf_to_lark(grammar.gbnf, schemas, markers or {})


def gbnf_to_lark(gbnf: str, schemas: Mapping[str, str], markers: Mapping[str, int]) -> str:
    """Lark for GBNF ``gbnf`` whose rules ``schemas`` (name -> JSON Schema text) are JSON;
    ``markers``: control tokens by text, which a literal spelling one may also be."""
    lines = [gbnf, *(f'{name} ::= "-"' for name in schemas)]
    if not re.search(r"(?m)^\s*space\s*::=", gbnf):
        lines.append(SPACE_RULE)
    rules = _GbnfRules("\n".join(lines))
    rules.allow_markers(markers)
    out = ["%llguidance {}", ""]
    for old, rule in rules.by_old_name.items():
        if old in schemas:
            out.append(f"{rule.name}: %json {json.dumps(guidance_schema(schemas[old]))}")
        else:
            out.append(str(rule))
    return "\n".join(out) + "\n"


def guidance_schema(schema_text: str) -> Any:
    """The schema as llguidance gets it: closed objects and one-space whitespace."""
    schema = json.loads(schema_text)
    if schema is True:
        schema = {}
    if isinstance(schema, dict):
        _prepare(schema, merged=False)
        schema = {**schema, "x-guidance": JSON_OPTIONS}
    return schema


def _prepare(node: Any, *, merged: bool) -> None:
    """Close objects and bound numbers and formats (see the module doc), everywhere."""
    if not isinstance(node, dict):
        return
    closable = "properties" in node and not (merged or "allOf" in node)
    if closable and "additionalProperties" not in node:
        node["additionalProperties"] = False
    _bound(node)
    for key in _SUBSCHEMA_MAPS:
        value = node.get(key)
        if isinstance(value, dict):
            for child in value.values():
                _prepare(child, merged=False)
    for key in _SUBSCHEMA_LISTS:
        for child in node.get(key, ()) if isinstance(node.get(key), list) else ():
            _prepare(child, merged=False)
    for key in _SUBSCHEMA_ONE:
        _prepare(node.get(key), merged=False)
    for part in node.get("allOf", ()) if isinstance(node.get("allOf"), list) else ():
        _prepare(part, merged=True)


def _bound(node: dict[str, Any]) -> None:
    """Bounds on numbers and some formats (each keyword only binds its own type)."""
    kinds = node.get("type")
    kinds = set(kinds) if isinstance(kinds, list) else {kinds}
    if kinds & {"integer", "number"}:
        low = _number(node.get("minimum", node.get("exclusiveMinimum")))
        high = _number(node.get("maximum", node.get("exclusiveMaximum")))
        if high is None and (low is None or low < NUMBER_LIMIT):
            node["maximum"] = NUMBER_LIMIT
        if low is None and (high is None or high > -NUMBER_LIMIT):
            node["minimum"] = -NUMBER_LIMIT
        if "number" in kinds and "multipleOf" not in node:
            node["multipleOf"] = FRACTION
    pattern = FORMAT_PATTERNS.get(str(node.get("format")))
    if pattern is not None and "pattern" not in node:
        del node["format"]
        node["pattern"] = pattern


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


class _GbnfRules:
    """GBNF rules parsed by llguidance's reader, all kept as Lark parser rules."""

    def __init__(self, source: str) -> None:
        self.source = source
        rules = _gbnf.GrammarParser().parse(source)
        for order, rule in enumerate(rules.values()):
            rule.order = order
            rule.alternatives = rule.alternatives.simplify()
        for rule in rules.values():
            for node in _descendants(rule):
                if isinstance(node, _gbnf.RuleRefNode):
                    if node.name not in rules:
                        raise ValueError(f"rule {node.name!r} is not defined")
                    node.target = rules[node.name]
        if "root" not in rules:
            raise ValueError("no root rule")
        self.by_old_name = dict(rules)
        taken: set[str] = set()
        for old, rule in rules.items():
            new = "start" if old == "root" else "r_" + old.replace("-", "_").lower()
            if new in taken or not _NAME.fullmatch(new):
                raise ValueError(f"rule name {old!r} has no Lark spelling")
            taken.add(new)
            rule.name = new

    def allow_markers(self, markers: Mapping[str, int]) -> None:
        """Each literal spelling a control token's text takes that token too.

        GBNF matches text, and llama.cpp's grammar sampler lets a control token through
        where its text fits. llguidance keeps control tokens apart (special tokens, written
        ``<[id]>``) and would force the text spelled in plain tokens; so the literal is
        rewritten as ``"before" ("marker" | <[id]>) "after"`` (through the value the
        reader prints between quotes).
        """
        found = {text: token for text, token in markers.items() if text in self.source}
        found = {text: token for text, token in found.items() if _plain(text)}
        if not found:
            return
        # One pass, longest first: a replacement is never searched again.
        pattern = re.compile("|".join(re.escape(t) for t in sorted(found, key=len, reverse=True)))

        def either(match: re.Match[str]) -> str:
            return f'" ("{match.group()}" | <[{found[match.group()]}]>) "'

        for rule in self.by_old_name.values():
            for node in _descendants(rule):
                if isinstance(node, _gbnf.LiteralNode) and "\\\\" not in node.value:
                    node.value = pattern.sub(either, node.value)


def _plain(text: str) -> bool:
    """Whether ``text`` reads the same inside a GBNF literal (no escapes needed)."""
    return bool(text) and not any(c in text for c in '"\\\n\r\t') and text.isprintable()


def _descendants(node: Any) -> list[Any]:
    found, stack = [], list(node.children())
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(child.children())
    return found
