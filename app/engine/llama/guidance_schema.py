"""An engine ``Grammar`` with JSON Schema rules -> an llguidance (Lark) grammar.

Each JSON rule becomes ``name: %json {schema}``, compiled by llguidance's own JSON Schema
compiler. The GBNF around them (a tool-call format's markers, a reasoning block before
the answer) is parsed with llguidance's GBNF reader and written back as Lark with every
rule a parser rule: GBNF matches characters with no lexer, while a Lark terminal is a
greedy lexeme (``[^<]*`` before ``"\\n</parameter>"`` would eat the newline the literal
needs), so only literals and character classes become lexemes, as short as GBNF's own.

The schemas are the ones serving already checked and bounded (``--json-max-items``,
``--json-max-string``: our limits apply first). Two defaults follow today's converter
rather than the JSON Schema spec, so a reply looks the same whichever engine made it: an
object with ``properties`` and no ``additionalProperties`` takes no other keys (not where
``allOf`` merges parts, which would make it unsatisfiable), and whitespace between tokens
is at most one space.

A grammar without JSON rules (a user's raw GBNF) is not converted: it stays on llama.cpp's
grammar sampler, which reads every GBNF it accepts exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from llguidance import gbnf_to_lark as _gbnf

from app.engine.types import Grammar

# As llama-cpp-python's converter: what wrapper grammars mean by ``space``.
SPACE_RULE = 'space ::= " "?'
JSON_OPTIONS = {"whitespace_pattern": " ?"}
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
        _close_objects(schema, merged=False)
        schema = {**schema, "x-guidance": JSON_OPTIONS}
    return schema


def _close_objects(node: Any, *, merged: bool) -> None:
    """Add ``additionalProperties: false`` where today's converter allows no other keys."""
    if not isinstance(node, dict):
        return
    has_all_of = "allOf" in node
    if "properties" in node and "additionalProperties" not in node and not (merged or has_all_of):
        node["additionalProperties"] = False
    for key in _SUBSCHEMA_MAPS:
        value = node.get(key)
        if isinstance(value, dict):
            for child in value.values():
                _close_objects(child, merged=False)
    for key in _SUBSCHEMA_LISTS:
        for child in node.get(key, ()) if isinstance(node.get(key), list) else ():
            _close_objects(child, merged=False)
    for key in _SUBSCHEMA_ONE:
        _close_objects(node.get(key), merged=False)
    for part in node.get("allOf", ()) if isinstance(node.get("allOf"), list) else ():
        _close_objects(part, merged=True)


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
