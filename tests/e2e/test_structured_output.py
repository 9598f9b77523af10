"""Structured output against the real model in a real server: every reply parses and validates.

The grammar makes the output valid by construction, so these hold for any seed; the
schemas keep strings and arrays bounded so every reply finishes within ``max_tokens``.
"""

from __future__ import annotations

import json
import re
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.support.openai_fixtures import KEY
from tests.support.server import ServerProcess

ASK = [{"role": "user", "content": "Describe a city in JSON."}]


class City(BaseModel):
    name: str = Field(max_length=24)
    country: Literal["France", "Japan", "Peru"]
    capital: bool


NESTED = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 30},
        "kind": {"enum": ["book", "film", "song"]},
        "year": {"type": "integer"},
        "released": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "time"},
        "id": {"type": "string", "format": "uuid"},
        "tags": {
            "type": "array",
            "items": {"type": "string", "maxLength": 12},
            "minItems": 1,
            "maxItems": 3,
        },
        "author": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 20},
                "alive": {"type": "boolean"},
            },
            "required": ["name"],
        },
        "rating": {"anyOf": [{"type": "number"}, {"type": "null"}]},
    },
    # The format fields are required, so that every reply has them to check.
    "required": ["title", "kind", "tags", "author", "released", "at", "id"],
}
FORMATS = jsonschema.FormatChecker(["date", "uuid"])
# jsonschema's own "time" check without the rfc3339 extra is draft 3's %H:%M:%S, which
# refuses RFC 3339 fractions and offsets (JSON Schema's "time"): this one follows RFC 3339.
RFC3339_TIME = re.compile(
    r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)


@FORMATS.checks("time")
def _rfc3339_time(value: object) -> bool:
    return not isinstance(value, str) or RFC3339_TIME.fullmatch(value) is not None


def test_sdk_parse_returns_the_model_for_every_seed(client: openai.OpenAI) -> None:
    for seed in range(20):
        reply = client.chat.completions.parse(
            model="SmolLM2-135M-Instruct.Q4_1",
            messages=ASK,  # type: ignore[arg-type]
            response_format=City,
            seed=seed,
            max_tokens=60,
        )
        city = reply.choices[0].message.parsed
        assert isinstance(city, City), reply.choices[0].message.content
        assert reply.choices[0].finish_reason == "stop"


def test_sdk_stream_helper_parses_for_every_seed(client: openai.OpenAI) -> None:
    for seed in range(20):
        with client.chat.completions.stream(
            model="SmolLM2-135M-Instruct.Q4_1",
            messages=ASK,  # type: ignore[arg-type]
            response_format=City,
            seed=seed,
            max_tokens=60,
        ) as stream:
            final = stream.get_final_completion()
        assert isinstance(final.choices[0].message.parsed, City)


def test_json_object_mode_always_parses(client: openai.OpenAI) -> None:
    # The grammar guarantees a complete reply is one JSON object; a tiny model may still
    # nest on and on until max_tokens, which is the one other way such a reply can end.
    finished = 0
    for seed in range(5):
        reply = client.chat.completions.create(
            model="SmolLM2-135M-Instruct.Q4_1",
            messages=[
                {"role": "user", "content": "Answer in JSON: what is 2+2? Use the key answer."}
            ],
            response_format={"type": "json_object"},
            seed=seed,
            temperature=0.5,
            max_tokens=120,
        )
        content = reply.choices[0].message.content or ""
        assert content.startswith("{")
        if reply.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(content), dict)
            finished += 1
        else:
            assert reply.choices[0].finish_reason == "length"
    assert finished >= 3


def test_nested_schema_outputs_validate(client: openai.OpenAI) -> None:
    # Without a format checker jsonschema ignores "format": make sure these are checked.
    assert {"date", "time", "uuid"} <= set(FORMATS.checkers)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("25:00:00Z", {"format": "time"}, format_checker=FORMATS)
    for seed, stream in [(seed, seed % 2 == 1) for seed in range(6)]:
        fmt = {"type": "json_schema", "json_schema": {"name": "work", "schema": NESTED}}
        args = {"seed": seed, "max_tokens": 400, "response_format": fmt}
        if stream:
            chunks = client.chat.completions.create(
                model="SmolLM2-135M-Instruct.Q4_1", messages=ASK, stream=True, **args
            )
            content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            reply = client.chat.completions.create(
                model="SmolLM2-135M-Instruct.Q4_1", messages=ASK, **args
            )
            content = reply.choices[0].message.content or ""
        jsonschema.validate(json.loads(content), NESTED, format_checker=FORMATS)


def test_a_schema_that_cannot_finish_ends_with_length(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    reply = client.chat.completions.create(
        model="SmolLM2-135M-Instruct.Q4_1",
        messages=[{"role": "user", "content": "Write a long story as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        max_tokens=3,
    )
    assert reply.choices[0].finish_reason == "length"
    assert (reply.choices[0].message.content or "").startswith("{")


def test_raw_gbnf_grammar_constrains_the_reply(server: ServerProcess) -> None:
    body = {
        "messages": [{"role": "user", "content": "Is the sky blue?"}],
        "grammar": 'root ::= ("yes" | "no") "."',
        "max_tokens": 10,
    }
    reply = _post(server, "/v1/chat/completions", body)
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] in ("yes.", "no.")
    completion = _post(server, "/v1/completions", {"prompt": "The answer:", **body})
    assert completion.json()["choices"][0]["text"] in ("yes.", "no.")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "n",
                        "schema": {"properties": {"n": {"$ref": "https://example.com/n"}}},
                    },
                }
            },
            "non-local",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": {"type": "no-such-type"}},
                }
            },
            "not valid",
        ),
        ({"grammar": "root ::= missing-rule"}, "GBNF"),
        ({"grammar": "root ::= [a", "response_format": {"type": "json_object"}}, "either"),
    ],
)
def test_bad_schemas_and_grammars_are_400_and_serving_goes_on(
    server: ServerProcess, extra: dict[str, object], named: str
) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **extra}
    bad = _post(server, "/v1/chat/completions", body)
    assert bad.status_code == 400, bad.text
    error = bad.json()["error"]
    assert named in error["message"]
    assert error["type"] == "invalid_request_error"
    ok = _post(server, "/v1/chat/completions", {**body, **dict.fromkeys(extra)})
    assert ok.status_code == 200


def _post(server: ServerProcess, path: str, body: dict[str, object]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(f"{server.base_url}{path}", json=body, headers=headers, timeout=120)


def test_a_grammar_no_token_can_follow_fails_that_request_only(server: ServerProcess) -> None:
    # NUL is in no token's text: the grammar rejects every token after "a". llama.cpp would
    # abort the process on accepting a rejected token; the request ends with a client error
    # (the grammar asked for the impossible: a 400, issue 17 row 11), and the server goes on.
    body = {"messages": [{"role": "user", "content": "Hi"}], "grammar": 'root ::= "a" [\\x00]'}
    failed = _post(server, "/v1/chat/completions", {**body, "max_tokens": 5})
    assert failed.status_code == 400
    assert "grammar allows no next token" in failed.json()["error"]["message"]
    ok = _post(server, "/v1/chat/completions", {**body, "grammar": None, "max_tokens": 3})
    assert ok.status_code == 200
