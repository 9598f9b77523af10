"""JSON Schema -> GBNF for every keyword the grammar enforces, checked without a model.

Each converted grammar is turned into a Python regex (``tests/support/gbnf_regex``) and
matched against values that validate and values that do not; the numeric grammars are
checked exhaustively over a range of numbers.
"""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal

import jsonschema
import pytest

from app.engine.json_numbers import Bound, multiple_of, number_range
from app.engine.llama.grammar import to_gbnf
from app.engine.types import Grammar, JsonRule
from app.serving.schema_check import SchemaPolicy, check_reply, with_defaults
from tests.support.gbnf_regex import to_regex


def grammar_of(schema: dict[str, object], *, unroll: int = 0) -> re.Pattern[str]:
    gbnf = to_gbnf(Grammar("root ::= answer", (JsonRule("answer", json.dumps(schema)),)))
    return to_regex(gbnf, unroll=unroll)


def accepts(pattern: re.Pattern[str], value: object) -> bool:
    return pattern.match(json.dumps(value, separators=(", ", ": "))) is not None


@pytest.mark.parametrize(
    "bounds",
    [
        {"minimum": 18, "maximum": 99},
        {"exclusiveMinimum": 0},
        {"minimum": -5, "maximum": 5},
        {"minimum": -123, "exclusiveMaximum": -7},
        {"maximum": 0},
        {"minimum": 100, "maximum": 1000},
        {"minimum": 3, "maximum": 2999},
        {"minimum": 7, "maximum": 7},
        {"minimum": 0.5, "maximum": 10.5},
    ],
)
def test_integer_ranges_are_exact(bounds: dict[str, float]) -> None:
    schema = {"type": "integer", **bounds}
    pattern = grammar_of(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for n in range(-3000, 3000):
        assert accepts(pattern, n) == validator.is_valid(n), n
    for text in ("01", "-0", "1.0", "+1", ""):
        assert pattern.match(text) is None


@pytest.mark.parametrize(
    ("bounds", "exact"),
    [
        ({"minimum": 0.5}, True),
        ({"minimum": 0, "maximum": 1}, True),
        ({"exclusiveMinimum": 0, "exclusiveMaximum": 100}, True),
        ({"minimum": -2.5, "exclusiveMaximum": 3.25}, True),
        ({"maximum": -0.75}, True),
        ({"exclusiveMinimum": 1}, True),
        ({"minimum": 0.25, "maximum": 0.75}, False),  # one integer part, two fractions
    ],
)
def test_number_ranges_accept_only_numbers_in_range(bounds: dict[str, float], exact: bool) -> None:
    schema = {"type": "number", **bounds}
    pattern = grammar_of(schema)
    validator = jsonschema.Draft202012Validator(schema)
    samples = [f"{i / 8:.3f}" for i in range(-40, 900)] + ["0.5", "3.25", "3.2501", "-0.75"]
    for text in samples:
        valid = validator.is_valid(json.loads(text))
        if exact and not text.startswith("-0.000"):
            assert (pattern.match(text) is not None) == valid, text
        elif pattern.match(text) is not None and not valid:
            assert not exact  # a superset only where the converter says it is not exact
    low = Bound(Decimal(str(bounds.get("minimum", bounds.get("exclusiveMinimum", -1e9)))))
    assert number_range(low, Bound(Decimal("0.75")))[1] in (True, False)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 7, 10, 12, 20, 25, 50, 100])
def test_multiple_of_small_moduli(k: int) -> None:
    rules = multiple_of(k, digits=3)
    gbnf = f"root ::= mod{k}\n" + "\n".join(f"{name} ::= {body}" for name, body in rules.items())
    pattern = to_regex(gbnf)
    for n in range(-1200, 1200):
        assert (pattern.match(str(n)) is not None) == (n % k == 0 and abs(n) < 1000), n


def test_multiple_of_in_a_schema_and_a_large_modulus_is_left_to_the_check() -> None:
    assert not accepts(grammar_of({"type": "integer", "multipleOf": 5}), 1234)
    assert accepts(grammar_of({"type": "integer", "multipleOf": 5}), 1230)
    assert accepts(grammar_of({"type": "integer", "multipleOf": 997}), 5)  # not enforced


FORMAT_CASES = {
    "date": (["2024-02-28", "1999-12-31", "2024-04-30"], ["2024-02-30", "2024-13-01", "24-1-1"]),
    "time": (["12:30:00Z", "23:59:59.123+02:00"], ["24:00:00Z", "12:30:00"]),
    "date-time": (["2024-01-31T08:00:00Z"], ["2024-01-31 08:00:00Z"]),
    "duration": (["P1Y2M3D", "PT5M", "P3W", "P1DT2H"], ["P", "PT", "1Y"]),
    "email": (
        ["ada@example.com", "a.b+c@mail.example.org"],
        ["ada", "@example.com", "a@b", ".a@b.com", "a..b@c.com"],
    ),
    "hostname": (["example.com", "a-1.b2"], ["-a.com", "a..b"]),
    "ipv4": (["192.168.0.1", "0.0.0.0", "255.255.255.255"], ["256.1.1.1", "01.1.1.1", "1.2.3"]),
    "ipv6": (["::1", "fe80::1", "2001:db8:0:0:0:0:2:1", "::"], [":::1", "1:2:3:4:5:6:7:8:9"]),
    "uuid": (["123e4567-e89b-12d3-a456-426614174000"], ["123e4567e89b12d3a456426614174000"]),
}


@pytest.mark.parametrize("fmt", sorted(FORMAT_CASES))
def test_formats(fmt: str) -> None:
    pattern = grammar_of({"type": "string", "format": fmt})
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    good, bad = FORMAT_CASES[fmt]
    for text in good:
        assert accepts(pattern, text), text
        assert checker.conforms(text, fmt), text  # what the grammar allows, the check allows
    for text in bad:
        assert not accepts(pattern, text), text


# The eight schemas of issue 19's table: a value that validates and one that does not.
ISSUE_SCHEMAS: list[tuple[dict[str, object], dict[str, object], dict[str, object]]] = [
    (
        {
            "type": "object",
            "properties": {"age": {"type": "integer", "minimum": 18, "maximum": 99}},
            "required": ["age"],
        },
        {"age": 18},
        {"age": 100},
    ),
    (
        {
            "type": "object",
            "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}},
            "required": ["n"],
        },
        {"n": 1},
        {"n": 0},
    ),
    (
        {
            "type": "object",
            "properties": {"x": {"type": "number", "minimum": 0.5}},
            "required": ["x"],
        },
        {"x": 0.5},
        {"x": 0.49},
    ),
    (
        {
            "allOf": [
                {
                    "type": "object",
                    "properties": {"a": {"type": "string", "maxLength": 5}},
                    "required": ["a"],
                },
                {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]},
            ]
        },
        {"a": "a", "b": 10},
        {"a": "a"},
    ),
    (
        {
            "type": "object",
            "properties": {"n": {"type": "integer", "multipleOf": 5}},
            "required": ["n"],
        },
        {"n": 35},
        {"n": 1234567890123456},
    ),
    (
        {
            "type": "object",
            "properties": {"e": {"type": "string", "format": "email"}},
            "required": ["e"],
        },
        {"e": "ada@example.com"},
        {"e": "https://example.com"},
    ),
    (
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 20},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
            },
            "required": ["name", "age"],
        },
        {"name": "Ada", "age": 36},
        {"name": "", "age": 36},
    ),
]


@pytest.mark.parametrize(("schema", "good", "bad"), ISSUE_SCHEMAS)
def test_issue_schemas_are_enforced_by_the_grammar(
    schema: dict[str, object], good: dict[str, object], bad: dict[str, object]
) -> None:
    pattern = grammar_of(schema)
    assert jsonschema.Draft202012Validator(schema).is_valid(good)
    assert accepts(pattern, good)
    assert not accepts(pattern, bad)


def test_unique_items_is_checked_on_the_reply_not_the_grammar() -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    assert accepts(grammar_of(schema), [1, 1])  # the grammar cannot tell
    found = check_reply(json.dumps(schema), "[1, 1]", "stop")
    assert not found.valid
    assert "non-unique" in found.errors[0]
    assert check_reply(json.dumps(schema), "[1, 2]", "stop").valid


def test_a_recursive_tree_schema_converts() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "v": {"type": "integer", "minimum": 0, "maximum": 9},
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2},
                },
                "required": ["v", "kids"],
            }
        },
        "$ref": "#/$defs/node",
    }
    pattern = grammar_of(tree, unroll=2)
    assert accepts(pattern, {"v": 1, "kids": [{"v": 2, "kids": []}]})
    assert not accepts(pattern, {"v": 10, "kids": []})
    assert not accepts(pattern, {"v": 1, "kids": [{"v": 2}]})


def test_a_pattern_with_bounded_repetition() -> None:
    pattern = grammar_of({"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3,4}$"})
    assert accepts(pattern, "AB-123")
    assert accepts(pattern, "AB-1234")
    assert not accepts(pattern, "AB-12")


def test_reply_checks_report_truncation_and_formats() -> None:
    schema = json.dumps(
        {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}
    )
    cut = check_reply(schema, '{"d": "2024-', "length")
    assert (cut.valid, cut.truncated) == (False, True)
    assert not check_reply(schema, '{"d": "2024-02-31"}', "stop").valid
    assert check_reply(schema, '{"d": "2024-02-28"}', "stop").valid


def test_runaway_defaults_bound_only_unbounded_arrays_and_strings() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}},
            "few": {"type": "array", "items": {"type": "string", "format": "date"}, "maxItems": 2},
        },
    }
    assert with_defaults(schema, SchemaPolicy()) is schema
    bounded = with_defaults(schema, SchemaPolicy(max_items=8, max_string=64))
    assert bounded["properties"]["tags"]["maxItems"] == 8
    assert bounded["properties"]["tags"]["items"]["maxLength"] == 64
    assert bounded["properties"]["few"] == schema["properties"]["few"]  # type: ignore[index]
    assert "maxItems" not in schema["properties"]["tags"]  # type: ignore[index]


def test_conversion_of_a_ten_field_schema_is_quick() -> None:
    schema = {
        "type": "object",
        "properties": {
            f"f{i}": {"type": "integer", "minimum": i, "maximum": 1000 * i} for i in range(10)
        },
    }
    started = time.perf_counter()
    grammar_of(schema)
    assert time.perf_counter() - started < 5  # generous: milliseconds on an idle machine


@pytest.mark.parametrize("schema", [{"type": "string"}, {"type": "string", "maxLength": 12}])
def test_strings_hold_no_raw_control_characters(schema: dict[str, object]) -> None:
    # JSON forbids unescaped control characters in a string (json.loads refuses the reply):
    # the grammar allows them only escaped.
    pattern = grammar_of(schema)
    assert pattern.match('"a\\nb"') is not None  # the escape, as json.dumps writes it
    for raw in ("\n", "\t", "\x00", "\x1f", "\x7f"):
        assert pattern.match(f'"a{raw}b"') is None, repr(raw)
