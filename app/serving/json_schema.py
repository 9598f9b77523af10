"""Which JSON Schemas the grammar can enforce, what it cannot, and the cost limits.

The backend turns a schema into a grammar (``engine/llama/schema_grammar``). Every schema
is checked here first, cheaply and before any conversion: it must be a valid JSON Schema
(the ``jsonschema`` package), within the cost limits of ``schema_limits`` (repetition
counts, enum sizes, size), and use known keywords. Keywords the grammar enforces are in
``CONSTRAINTS``; those it cannot (``UNENFORCED``: ``uniqueItems``, ``not``, large
``multipleOf``...) are allowed, and the finished reply is validated against the whole
schema instead (``schema_check``), unless ``strict`` asks for a 400 up front.

``enforceable_schema`` is the lenient path for schemas that guide rather than bind (the
tools of a request that did not ask for ``strict``): it drops what the grammar cannot
enforce (unknown keywords, string formats such as ``uri``), so a client like Claude Code,
whose tools use those, still gets well-formed calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from app.engine.json_numbers import modulus_enforced
from app.errors import InvalidRequest
from app.serving.schema_limits import over_limit

CONSTRAINTS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "$ref",
        "pattern",
        "format",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "allOf",
    }
)
"""Keywords the converter enforces."""

UNENFORCED = frozenset(
    {
        "uniqueItems",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "patternProperties",
        "contains",
        "minContains",
        "maxContains",
        "unevaluatedProperties",
        "unevaluatedItems",
        "contentEncoding",
        "contentMediaType",
    }
)
"""Keywords no grammar here enforces: the finished reply is validated against them."""

ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "definitions",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "discriminator",
        "strict",
    }
)
"""Keywords that constrain nothing (``$defs`` is walked on its own)."""

FORMATS = frozenset(
    {"date", "time", "date-time", "duration", "email", "hostname", "ipv4", "ipv6"}
    | {"uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
)
"""String formats the converter has grammar rules for."""

# The converter picks one of these per schema, in this order, and ignores the other
# constraints beside it (they are then checked on the finished reply). (``oneOf`` is
# generated like ``anyOf``: an output matches at least one alternative, so alternatives
# that overlap are not made exclusive.)
_BRANCHES = ("$ref", "anyOf", "oneOf", "const", "enum", "allOf")
_LENGTHS = ("minLength", "maxLength")
_RANGE = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_OBJECT_KEYS = {"properties", "required", "additionalProperties"}  # merged with `allOf`


def canonical_schema(schema: object, *, param: str, strict: bool = False) -> str:
    """The schema as canonical JSON text after checking it; raises ``InvalidRequest``.

    ``strict``: refuse a schema with constraints the grammar cannot enforce (else they are
    checked on the finished reply). Checks are cached by the canonical text: clients send
    the same schema again and again, and the meta-schema check alone takes milliseconds.
    """
    if not isinstance(schema, dict):
        raise InvalidRequest("The JSON schema must be an object.", param=param)
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise InvalidRequest(
            f"The JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels.", param=param
        )
    over = over_limit(schema)
    if over is not None:
        raise InvalidRequest(over, param=param)
    text = json.dumps(schema, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    problem, unenforced = _problem(text)
    if problem is not None:
        raise InvalidRequest(problem, param=param)
    if strict and unenforced:
        raise InvalidRequest(
            "The JSON schema uses features that the grammar cannot enforce while generating: "
            + "; ".join(unenforced)
            + ". (Only OpenAI chat completions take them, reporting in choices[].schema_check "
            "whether the reply validates, and not when the server runs with --strict-schemas.)",
            param=param,
        )
    return text


def enforceable_schema(schema: object) -> tuple[object, list[str]]:
    """``schema`` without the keywords the grammar cannot enforce, and what was dropped.

    Only unknown keywords and unsupported ``format`` values go; other problems stay for
    ``canonical_schema`` to report. Schemas nested too deeply are returned as they are.
    """
    dropped: list[str] = []
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        return schema, dropped
    return _enforceable(schema, "", dropped), dropped


def _enforceable(schema: object, where: str, dropped: list[str]) -> object:
    if not isinstance(schema, Mapping):
        return schema
    kept = _enforceable_keywords(schema, f" (at {where})" if where else "", dropped)
    prefix = f"{where}." if where else ""
    for key, value in kept.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, Mapping):
            kept[key] = {
                name: _enforceable(child, f"{prefix}{key}.{name}", dropped)
                for name, child in value.items()
            }
        elif key in ("anyOf", "oneOf", "prefixItems", "items") and isinstance(value, list):
            kept[key] = [
                _enforceable(child, f"{prefix}{key}[{i}]", dropped) for i, child in enumerate(value)
            ]
        elif key in ("items", "additionalProperties"):
            kept[key] = _enforceable(value, f"{prefix}{key}", dropped)
    return kept


def _enforceable_keywords(schema: Mapping[str, Any], at: str, dropped: list[str]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in CONSTRAINTS and key not in ANNOTATIONS:
            dropped.append(f"`{key}`{at}")
        elif key == "format" and value not in FORMATS:
            dropped.append(f"`format: {value}`{at}")
        else:
            kept[key] = value
    return kept


# JSON nesting levels. The meta-schema check, the checks below and the grammar converter
# all recurse per level: far deeper schemas overflow Python's stack (a RecursionError, 500).
MAX_SCHEMA_DEPTH = 64


def _depth(value: object) -> int:
    """How deeply ``value`` nests (a scalar is 1), without recursing."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


@lru_cache(maxsize=256)
def _problem(text: str) -> tuple[str | None, tuple[str, ...]]:
    """Why the schema is refused (or None), and what in it the grammar will not enforce."""
    schema = json.loads(text)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.path) or "the top level"
        return f"The JSON schema is not valid: {exc.message} (at {where}).", ()
    except RecursionError:  # e.g. a `pattern` of thousands of nested groups (re recurses)
        return "The JSON schema is nested too deeply to check (a pattern or a subschema).", ()
    refused: list[str] = []
    unenforced: list[str] = []
    for kind, what in findings(schema):
        (refused if kind == "refused" else unenforced).append(what)
    if refused:
        return (
            "The JSON schema uses features that this server cannot enforce while generating: "
            + "; ".join(sorted(set(refused)))
            + ".",
            (),
        )
    return None, tuple(sorted(set(unenforced)))


def unsupported(schema: Any) -> Iterator[str]:
    """What in ``schema`` makes it refused (kept for callers that only need that)."""
    return (what for kind, what in findings(schema) if kind == "refused")


def findings(schema: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """``("refused", why)`` and ``("unenforced", what)`` for ``schema`` and its subschemas."""
    if isinstance(schema, bool):
        if not schema and where:  # `false` as a subschema: nothing may match
            yield "refused", f"a `false` subschema (at {where})"
        return
    if not isinstance(schema, Mapping):
        return
    at = f" (at {where})" if where else ""
    yield from _keywords(schema, at)
    for what in _combinations(schema, at):
        yield ("refused" if what.startswith("a non-local") else "unenforced"), what
    for what in _strings_and_arrays(schema, at):
        yield "unenforced", what
    for what in _numbers(schema, at):
        yield "unenforced", what
    for child, path in _subschemas(schema, where):
        yield from findings(child, path)


def _keywords(schema: Mapping[str, Any], at: str) -> Iterator[tuple[str, str]]:
    for key in schema:
        if key in UNENFORCED:
            yield "unenforced", f"`{key}`{at}"
        elif key not in CONSTRAINTS and key not in ANNOTATIONS:
            yield "refused", f"`{key}`{at}"


def _numbers(schema: Mapping[str, Any], at: str) -> Iterator[str]:
    modulus = schema.get("multipleOf")
    if modulus is None:
        return
    ranged = any(k in schema for k in _RANGE)
    if schema.get("type") != "integer" or not modulus_enforced(modulus) or ranged:
        yield f"`multipleOf: {modulus}` (the grammar takes small integer moduli only){at}"


def _beside_branch(schema: Mapping[str, Any], at: str) -> Iterator[str]:
    branch = next((key for key in _BRANCHES if key in schema), None)
    if branch is not None:
        beside_ok = {branch, "type"} | (_OBJECT_KEYS if branch == "allOf" else set())
        for key in schema:
            if key in CONSTRAINTS and key not in beside_ok:
                yield f"`{key}` beside `{branch}`{at}"


def _combinations(schema: Mapping[str, Any], at: str) -> Iterator[str]:
    yield from _beside_branch(schema, at)
    if "items" in schema and "prefixItems" in schema:
        yield f"`prefixItems` beside `items`{at}"
    ref = schema.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        yield f"a non-local `$ref` {ref!r}{at}"
    kind = schema.get("type")
    if isinstance(kind, list) and any(k in schema for k in CONSTRAINTS - {"type"}):
        yield f"a list of types with other constraints{at}"
    if "allOf" in schema and kind not in (None, "object"):
        yield f"`allOf` of other than objects{at}"
    properties = schema.get("properties") or {}
    if "allOf" not in schema:
        for name in schema.get("required") or []:
            if name not in properties:
                yield f"required property {name!r} without a schema in `properties`{at}"


def _strings_and_arrays(schema: Mapping[str, Any], at: str) -> Iterator[str]:
    kind = schema.get("type")
    fmt = schema.get("format")
    if fmt is not None and fmt not in FORMATS:
        yield f"`format: {fmt}`{at}"
    lengths = [k for k in _LENGTHS if k in schema]
    if lengths and (kind != "string" or "pattern" in schema or fmt is not None):
        yield f"`{lengths[0]}` without `type: string` or beside `pattern`/`format`{at}"
    if any(k in schema for k in ("minItems", "maxItems")) and "items" not in schema:
        yield f"`minItems`/`maxItems` without `items`{at}"


def _subschemas(schema: Mapping[str, Any], where: str) -> Iterator[tuple[Any, str]]:
    prefix = f"{where}." if where else ""
    for key in ("properties", "$defs", "definitions"):
        for name, child in (schema.get(key) or {}).items():
            yield child, f"{prefix}{key}.{name}"
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for i, child in enumerate(schema.get(key) or []):
            yield child, f"{prefix}{key}[{i}]"
    items = schema.get("items")
    if isinstance(items, list):
        for i, child in enumerate(items):
            yield child, f"{prefix}items[{i}]"
    elif items is not None:
        yield items, f"{prefix}items"
    for key in ("additionalProperties", "not", "if", "then", "else", "contains"):
        extra = schema.get(key)
        if isinstance(extra, Mapping):
            yield extra, f"{prefix}{key}"
