"""Structured output: ``response_format`` and ``grammar`` -> the engine's ``Grammar``.

``json_object`` constrains the reply to one JSON object; ``json_schema`` to JSON that
validates against the schema (checked first in ``json_schema``: unsupported features are a
400); ``grammar`` is GBNF passed through as llama.cpp's server takes it. The engine compiles
(and caches) the grammar at submit, so an invalid one is a 400 before any work.
"""

from __future__ import annotations

from app.engine.types import Grammar, JsonRule
from app.errors import InvalidRequest
from app.schemas.common import SamplingRequest
from app.serving.json_schema import canonical_schema
from app.serving.schema_check import SchemaPolicy, with_defaults

ANSWER_RULE = "answer"


def json_grammar(schema: object, *, param: str, policy: SchemaPolicy | None = None) -> Grammar:
    """A grammar for exactly one JSON value that validates against ``schema`` (what the
    grammar cannot enforce is checked on the reply; see ``schema_check``)."""
    policy = policy or SchemaPolicy()
    canonical_schema(schema, param=param, strict=policy.strict)  # checks and cost limits
    text = canonical_schema(with_defaults(schema, policy), param=param)
    return Grammar(f"root ::= {ANSWER_RULE}", (JsonRule(ANSWER_RULE, text),), param=param)


def response_schema(body: SamplingRequest) -> str | None:
    """The canonical JSON Schema text a ``json_schema`` response_format asks for, if any."""
    fmt = body.response_format
    if fmt is None or fmt.type != "json_schema" or fmt.json_schema is None:
        return None
    return canonical_schema(fmt.json_schema.schema_, param="response_format")


def response_grammar(body: SamplingRequest, policy: SchemaPolicy | None = None) -> Grammar | None:
    """The grammar a request asks for with ``response_format`` or ``grammar``, if any."""
    schema = body.response_format.schema_dict() if body.response_format is not None else None
    if body.grammar is not None:
        if schema is not None:
            raise InvalidRequest(
                "Send either a grammar or a JSON response_format, not both.", param="grammar"
            )
        return Grammar(body.grammar, param="grammar")
    if schema is None:
        return None
    return json_grammar(schema, param="response_format", policy=policy)
