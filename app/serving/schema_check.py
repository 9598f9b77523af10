"""The finished reply checked against its JSON Schema, and runaway-structure defaults.

The grammar enforces most of a schema while generating (``json_schema.CONSTRAINTS``); what
it cannot (``uniqueItems``, ``not``, a large ``multipleOf``...) is checked here on the
finished reply with ``jsonschema`` and a format checker, and so is a reply that ended
(``length``) before its JSON did. The OpenAI chat route reports the result in each choice's
``schema_check`` (see the README); it never pretends a reply is valid when it is not.

``SchemaPolicy`` holds the settings: ``strict`` refuses schemas with unenforced constraints
up front; ``max_items``/``max_string`` give unbounded arrays and strings a bound (off at 0).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import jsonschema

MAX_ERRORS = 5


@dataclass(frozen=True)
class SchemaPolicy:
    """How JSON Schemas are treated (from ``--strict-schemas``, ``--json-max-*``)."""

    strict: bool = False
    max_items: int = 0  # 0: unbounded arrays stay unbounded
    max_string: int = 0  # 0: unbounded strings stay unbounded


def unreported(policy: SchemaPolicy | None) -> SchemaPolicy:
    """``policy`` for a route that cannot report ``schema_check``: strict, so that no
    constraint is silently dropped there."""
    return replace(policy or SchemaPolicy(), strict=True)


@dataclass(frozen=True)
class SchemaCheck:
    """Whether a finished reply validates; why not; whether it ended inside its JSON."""

    valid: bool
    errors: tuple[str, ...] = ()
    truncated: bool = False


def check_reply(schema_text: str, text: str, finish_reason: str) -> SchemaCheck:
    """Validate ``text`` (the whole reply) against the schema (canonical JSON text)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        truncated = finish_reason == "length"
        why = "the reply ended inside its JSON (finish_reason length)" if truncated else None
        return SchemaCheck(False, (why or f"the reply is not JSON: {exc}",), truncated)
    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)  # the schema's draft's formats
    errors = []
    for error in validator.iter_errors(value):
        where = "/".join(str(part) for part in error.absolute_path) or "the top level"
        errors.append(f"{error.message[:200]} (at {where})")
        if len(errors) == MAX_ERRORS:
            break
    return SchemaCheck(not errors, tuple(errors))


def with_defaults(schema: Any, policy: SchemaPolicy) -> Any:
    """``schema`` with ``maxItems``/``maxLength`` added where arrays and plain strings have
    none (a copy; the schema itself when the policy adds nothing)."""
    if not policy.max_items and not policy.max_string:
        return schema
    copy = json.loads(json.dumps(schema))
    for node in _nodes(copy):
        kind = node.get("type")
        if policy.max_items and kind == "array" and "maxItems" not in node:
            node["maxItems"] = max(policy.max_items, node.get("minItems", 0))
        plain = not any(k in node for k in ("pattern", "format", "enum", "const"))
        if policy.max_string and kind == "string" and plain and "maxLength" not in node:
            node["maxLength"] = max(policy.max_string, node.get("minLength", 0))
    return copy


def _nodes(schema: Any) -> Iterator[dict[str, Any]]:
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(v for k, v in node.items() if k not in ("enum", "const", "default"))
        elif isinstance(node, list):
            stack.extend(node)
