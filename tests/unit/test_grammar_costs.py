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


# Issue 17: the nullable-repetition product (a repetition of what can match nothing).
NULLABLE = "max_nullable_repetition"


@pytest.mark.parametrize(
    "gbnf",
    [
        'root ::= ("a"?){0,2000}',
        'root ::= (("a"?){0,2000}){0,2000}',
        'root ::= (("a"?){0,20}){0,20}',  # never finished on llama.cpp's sampler
        'root ::= ([^"]?){0,8}',  # 0.4 s per token
        "root ::= ([a-z]?){0,3} ([a-z]?){0,3}",  # in a row: they add
        "x ::= [a-z]? [a-z]?\nroot ::= x{0,3}",  # through a rule: 3 copies of 2 slots
        'root ::= y{0,5}\ny ::= z\nz ::= "a"? | "b"',  # through a chain of references
        "root ::= " + "(" * 200 + '"a"?' + "){0,2}" * 200,  # deep: 2^200
        'root ::= ("a"?)?{0,9}',  # an operator on a repetition repeats it again
    ],
)
def test_nullable_repetitions_are_refused_before_llama_cpp_sees_them(gbnf: str) -> None:
    started = time.perf_counter()
    problem = repetition_problem(gbnf)
    assert time.perf_counter() - started < 0.5
    assert problem is not None
    assert NULLABLE in problem


def test_nullable_repetition_product_counts() -> None:
    from app.engine.llama.gbnf_nullable import nullable_repetition_product as product

    assert product('root ::= (("a"?){0,4}){0,4}') == 16
    assert product('root ::= ("a"?){0,3} "x" ("b"?){0,2}') == 5
    assert product('root ::= ("a"?)* ("a"?)+') == 2  # one recursive rule each
    assert product('root ::= [a-z]{0,2000} ("a" "b"?){0,50} "c"*') == 0  # never empty
    assert product('root ::= "a" (root)? | ""') == 1  # a reference cycle counts once
    assert product("root ::= (") == 0 or product("root ::= (") == -1  # llama.cpp reports it


def _tool_grammars() -> list[tuple[str, str]]:
    """Every grammar the tool-call formats write: each family, forced and lazy, one or
    several calls, a named choice."""
    from pathlib import Path

    from app.engine.llama.grammar import to_gbnf
    from app.schemas.chat import ChatCompletionRequest
    from app.serving.tools import tool_prompt

    templates = Path(__file__).parents[1] / "fixtures" / "templates"
    parameters = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "days": {"type": "integer", "minimum": 1},
            "units": {"enum": ["c", "f"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        },
        "required": ["city"],
    }
    tools = [
        {"type": "function", "function": {"name": n, "parameters": parameters}}
        for n in ("get_weather", "get_time")
    ]
    choices: list[object] = ["auto", "required"]
    choices.append({"type": "function", "function": {"name": "get_time"}})
    found = []
    for path in sorted(templates.glob("*.jinja")):
        for choice in choices:
            for parallel in (False, True):
                body = ChatCompletionRequest.model_validate(
                    {
                        "model": "m",
                        "messages": [{"role": "user", "content": "hi"}],
                        "tools": tools,
                        "tool_choice": choice,
                        "parallel_tool_calls": parallel,
                    }
                )
                grammar = tool_prompt(body, path.read_text()).grammar
                if grammar is not None:  # generic "auto": the reply is parsed, not constrained
                    found.append((f"{path.stem}/{choice}/{parallel}", to_gbnf(grammar)))
    return found


def _json_grammars() -> list[tuple[str, str]]:
    from app.engine.llama.grammar import to_gbnf

    schemas: list[tuple[str, object]] = [
        ("object", {"type": "object"}),
        ("any", {}),
        ("optional-props", {"type": "object", "properties": {f"p{i}": {} for i in range(40)}}),
        ("pattern", {"type": "string", "pattern": "^(a?b)?[0-9]{2,4}(-[a-z]+)*$"}),
        ("formats", {"type": "string", "format": "date-time"}),
        ("numbers", {"type": "number", "minimum": -5, "maximum": 1e6}),
        ("array", {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 9}),
    ]
    nested = {"type": "object", "properties": {"a": {"type": "array", "items": schemas[2][1]}}}
    schemas += [("nested", nested), ("anyof", {"anyOf": [s for _, s in schemas[:6]]})]
    return [(name, to_gbnf(json_grammar(s, param="response_format"))) for name, s in schemas]


def test_the_grammars_of_tools_and_schemas_pass_the_nullable_bound() -> None:
    grammars = _tool_grammars() + _json_grammars()
    assert len(grammars) > 50
    for name, gbnf in grammars:
        assert repetition_problem(gbnf) is None, name


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": {"type": "integer"}, "maxItems": 2000},
        {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 300},
        {"type": "string", "minLength": 1, "maxLength": 2000},
    ],
)
def test_counts_the_schema_limits_allow_pass_the_grammar_guard(schema: dict[str, object]) -> None:
    # The base converter wrote n nested optional groups, which the group-depth guard (256)
    # refused past ~256: counts up to max_repetition (2,000) are GBNF {m,n} now.
    from app.engine.llama.grammar import to_gbnf

    gbnf = to_gbnf(json_grammar(schema, param="response_format"))
    assert repetition_problem(gbnf) is None
    [answer] = [line for line in gbnf.splitlines() if line.startswith("answer ::=")]
    assert "?)?)?" not in answer
