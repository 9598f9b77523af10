"""Issue 17 rows 2 and 3: schemas and grammars that would cost seconds or gigabytes are
refused before any conversion, quickly, with a 400 that names the limit and the field."""

from __future__ import annotations

import time

import pytest

from app.engine.llama.grammar import repetition_problem
from app.errors import InvalidRequest
from app.serving.structured import json_grammar

BOUND_S = 5.0  # generous: each refusal takes milliseconds on an idle machine


@pytest.mark.parametrize(
    ("schema", "limit"),
    [
        ({"type": "array", "items": {"type": "integer"}, "minItems": 4_000_000}, "max_repetition"),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 2_001}, "max_repetition"),
        ({"type": "string", "minLength": 4_000_000}, "max_repetition"),
        ({"type": "string", "maxLength": 100_000}, "max_repetition"),
        ({"type": "string", "pattern": "^[a-z]{0,100000}$"}, "max_repetition"),
        (
            {
                "type": "object",
                "properties": {f"s{i}": {"type": "string", "maxLength": 2000} for i in range(6)},
            },
            "max_total_repetition",
        ),
        ({"enum": [f"v{i}" for i in range(20_000)]}, "max_enum_values"),
        (
            {"anyOf": [{"enum": [f"{j}-{i}" for i in range(900)]} for j in range(5)]},
            "max_total_enum_values",
        ),
        (
            {"type": "object", "properties": {f"p{i}": {} for i in range(20_001)}},
            "max_schema_nodes",
        ),
    ],
)
@pytest.mark.parametrize("param", ["response_format", "format", "parameters.grammar"])
def test_costly_schemas_are_refused_quickly(
    schema: dict[str, object], limit: str, param: str
) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidRequest) as info:
        json_grammar(schema, param=param)
    assert time.perf_counter() - started < BOUND_S
    assert limit in info.value.message
    assert info.value.param == param


@pytest.mark.parametrize(
    ("gbnf", "named"),
    [
        ('root ::= [a-z]{0,100000} "x"', "max_repetition"),
        ("root ::= " + " ".join(["[a-z]{0,2000}"] * 40), "max_total_repetition"),
        ("root ::= " + " | ".join(f'"{i}"' for i in range(20_002)), "max_alternatives"),
        ('root ::= "a"{5,2}', "maximum below its minimum"),
    ],
)
def test_costly_raw_grammars_are_refused_quickly(gbnf: str, named: str) -> None:
    started = time.perf_counter()
    problem = repetition_problem(gbnf)
    assert time.perf_counter() - started < BOUND_S
    assert problem is not None
    assert named in problem


def test_bounded_grammars_pass() -> None:
    assert repetition_problem('root ::= [a-z]{0,2000} "|" "{3}"') is None
    assert repetition_problem("root ::= " + " | ".join(f'"{i}"' for i in range(1000))) is None
    json_grammar({"type": "array", "items": {"type": "integer"}, "maxItems": 2000}, param="p")
