"""The JSON Schema check before generating: what the grammar can enforce passes, the rest is
a 400 naming each feature and where it is."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field

from app.errors import InvalidRequest
from app.schemas.chat import ChatCompletionRequest
from app.serving.json_schema import canonical_schema
from app.serving.structured import response_grammar


class Item(BaseModel):
    name: str = Field(max_length=10)
    count: int | None = None


class Order(BaseModel):
    items: list[Item] = Field(min_length=1)
    note: str


def test_pydantic_schemas_are_accepted_and_canonical() -> None:
    schema = Order.model_json_schema()
    text = canonical_schema(schema, param="response_format")
    assert json.loads(text) == schema
    assert text == canonical_schema(json.loads(json.dumps(schema)), param="response_format")


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        (
            {"type": "object", "properties": {"a": {"type": "number", "multipleOf": 2}}},
            "properties.a",
        ),
        ({"type": "integer", "multipleOf": 1000}, "multipleOf: 1000"),
        ({"type": "string", "format": "uri"}, "format: uri"),
        ({"type": "array", "minItems": 2}, "without `items`"),
        ({"type": "object", "required": ["x"]}, "'x'"),
        ({"anyOf": [{"type": "string"}], "properties": {}}, "beside `anyOf`"),
        ({"type": ["string", "null"], "maxLength": 3}, "list of types"),
        ({"type": "string", "pattern": "a+", "maxLength": 3}, "maxLength"),
        ({"not": {"type": "string"}}, "`not`"),
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
        ({"if": {"type": "string"}, "then": {"maxLength": 2}}, "`if`"),
        ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired"),
    ],
)
def test_unenforced_features_pass_and_strict_mode_names_them(
    schema: dict[str, object], named: str
) -> None:
    """Accepted by default (the reply is checked after); refused with --strict-schemas."""
    canonical_schema(schema, param="response_format")
    with pytest.raises(InvalidRequest) as info:
        canonical_schema(schema, param="response_format", strict=True)
    assert named in info.value.message
    assert "--strict-schemas" in info.value.message
    assert info.value.param == "response_format"


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"$ref": "https://example.com/s.json"}, "non-local"),
        ({"type": "object", "frobnicate": 1}, "`frobnicate`"),
        ({"type": "object", "properties": {"a": False}}, "`false` subschema"),
    ],
)
def test_unconvertible_schemas_are_refused(schema: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        canonical_schema(schema, param="response_format")
    assert named in info.value.message
    assert info.value.param == "response_format"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 0, "maximum": 10, "exclusiveMinimum": -1},
        {"type": "number", "minimum": 0.5},
        {"type": "string", "format": "email"},
        {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}}]},
        {"type": "integer", "multipleOf": 5},
    ],
)
def test_enforced_keywords_pass_strict_mode(schema: dict[str, object]) -> None:
    canonical_schema(schema, param="response_format", strict=True)


def test_invalid_schemas_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="not valid"):
        canonical_schema({"type": "nope"}, param="p")
    with pytest.raises(InvalidRequest, match="must be an object"):
        canonical_schema([1], param="p")


def _body(**extra: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}], **extra}
    )


def test_response_format_kinds() -> None:
    assert response_grammar(_body()) is None
    assert response_grammar(_body(response_format={"type": "text"})) is None
    json_mode = response_grammar(_body(response_format={"type": "json_object"}))
    assert json_mode is not None
    assert json.loads(json_mode.json_rules[0].schema) == {"type": "object"}
    fmt = {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "boolean"}}}
    grammar = response_grammar(_body(response_format=fmt))
    assert grammar is not None
    assert grammar.gbnf == "root ::= answer"
    assert grammar.json_rules[0].schema == '{"type":"boolean"}'
    raw = response_grammar(_body(grammar='root ::= "x"'))
    assert raw is not None
    assert raw.gbnf == 'root ::= "x"'
    assert raw.param == "grammar"


def test_json_schema_format_needs_its_schema_object() -> None:
    with pytest.raises(ValueError, match="json_schema"):
        _body(response_format={"type": "json_schema"})
