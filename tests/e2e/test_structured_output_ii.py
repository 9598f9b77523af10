"""Structured output II on the real model: issue 19's eight schemas hold for every seed at
temperature 1.0, streamed and not; the openai SDK's ``parse()`` and LangChain get pydantic
models with ``Field(ge, le, max_length)`` and ``EmailStr``; issue 17's costly schemas and
grammars are refused quickly while another stream goes on.

Kept small (one server, three seeds, short replies): the machine running it may be busy.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, EmailStr, Field

from app.engine.llama import _lib
from app.engine.llama.grammar import GrammarCache
from app.engine.types import Grammar, JsonRule
from tests.support.openai_fixtures import KEY
from tests.support.server import ServerProcess
from tests.unit.test_schema_grammar import ISSUE_SCHEMAS

SEEDS = (0, 1, 2)
UNIQUE = {
    "type": "object",
    "properties": {
        "xs": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 3},
            "minItems": 2,
            "maxItems": 4,
            "uniqueItems": True,
        }
    },
    "required": ["xs"],
}
HEADERS = {"Authorization": f"Bearer {KEY}"}


def _body(schema: dict[str, Any], seed: int, *, stream: bool) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "Answer in JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        "temperature": 1.0,
        "seed": seed,
        "max_tokens": 120,
        "stream": stream,
    }


def _reply(server: ServerProcess, body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Content, finish_reason and schema_check of a chat reply, streamed or not."""
    url = f"{server.base_url}/v1/chat/completions"
    if not body["stream"]:
        answer = httpx.post(url, json=body, headers=HEADERS, timeout=300)
        assert answer.status_code == 200, answer.text
        choice = answer.json()["choices"][0]
        return choice["message"]["content"], choice["finish_reason"], choice["schema_check"]
    text, finish, check = [], "", {}
    with httpx.stream("POST", url, json=body, headers=HEADERS, timeout=300) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:])["choices"]:
                text.append(choice["delta"].get("content") or "")
                if choice.get("finish_reason"):
                    finish, check = choice["finish_reason"], choice["schema_check"]
    return "".join(text), finish, check


@pytest.mark.parametrize(("schema", "good", "bad"), ISSUE_SCHEMAS)
def test_issue_schemas_are_enforced_for_every_seed(
    server: ServerProcess, schema: dict[str, Any], good: object, bad: object
) -> None:
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    for seed in SEEDS:
        content, finish, check = _reply(server, _body(schema, seed, stream=seed == SEEDS[-1]))
        assert finish == "stop", content
        jsonschema.validate(json.loads(content), schema, format_checker=checker)
        assert check == {"valid": True, "errors": [], "truncated": False}


def test_unique_items_is_reported_truthfully(server: ServerProcess) -> None:
    validator = jsonschema.Draft202012Validator(UNIQUE)
    for seed in SEEDS:
        content, _, check = _reply(server, _body(UNIQUE, seed, stream=seed == SEEDS[-1]))
        value = json.loads(content)
        assert len(value["xs"]) in range(2, 5)  # the grammar holds what it can
        assert check["valid"] == validator.is_valid(value)
        assert check["valid"] or "non-unique" in check["errors"][0]


def test_a_reply_cut_by_max_tokens_says_so(server: ServerProcess) -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    body = {**_body(schema, 0, stream=False), "max_tokens": 6}
    _, finish, check = _reply(server, body)
    assert finish == "length"
    assert check["valid"] is False
    assert check["truncated"] is True


class Person(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    age: int = Field(ge=0, le=120)
    email: EmailStr
    score: float = Field(ge=0, le=1)


def test_sdk_parse_with_constrained_fields_and_email(client: openai.OpenAI) -> None:
    for seed in SEEDS:
        reply = client.chat.completions.parse(
            model="any",
            messages=[{"role": "user", "content": "Invent a person."}],
            response_format=Person,
            temperature=1.0,
            seed=seed,
            max_tokens=250,
        )
        person = reply.choices[0].message.parsed
        assert isinstance(person, Person), reply.choices[0].message.content


def test_langchain_with_structured_output(server: ServerProcess) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        base_url=f"{server.base_url}/v1",
        api_key=KEY,  # type: ignore[arg-type]
        model="any",
        temperature=1.0,
        seed=3,
        max_tokens=250,  # type: ignore[call-arg]
    )
    person = llm.with_structured_output(Person, method="json_schema").invoke("Invent a person.")
    assert isinstance(person, Person)


COSTLY: list[tuple[str, dict[str, Any]]] = [
    (
        "/v1/chat/completions",
        _body(
            {"type": "array", "items": {"type": "integer"}, "minItems": 4_000_000}, 0, stream=False
        ),
    ),
    (
        "/api/chat",
        {
            "model": "any",
            "messages": [{"role": "user", "content": "Hi"}],
            "format": {"type": "string", "pattern": "^[a-z]{0,100000}$"},
            "stream": False,
        },
    ),
    (
        "/generate",
        {
            "inputs": "Hi",
            "parameters": {
                "grammar": {"type": "json", "value": {"type": "string", "minLength": 4_000_000}}
            },
        },
    ),
    (
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "Hi"}],
            "grammar": "root ::= " + " ".join(["[a-z]{0,100000}"] * 40),
        },
    ),
    (
        "/v1/chat/completions",
        _body({"enum": [f"item-{i}" for i in range(20_000)]}, 0, stream=False),
    ),
]


def test_costly_schemas_are_refused_quickly_and_a_stream_goes_on(server: ServerProcess) -> None:
    async def scenario() -> tuple[list[float], list[tuple[int, float, str]]]:
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=HEADERS, timeout=300
        ) as http:
            gaps: list[float] = []

            async def stream() -> None:
                body = {
                    "messages": [{"role": "user", "content": "Tell a story."}],
                    "max_tokens": 60,
                    "ignore_eos": True,
                    "stream": True,
                }
                async with http.stream("POST", "/v1/chat/completions", json=body) as answer:
                    last = time.perf_counter()
                    async for _ in answer.aiter_lines():
                        now = time.perf_counter()
                        gaps.append(now - last)
                        last = now

            async def costly(path: str, body: dict[str, Any]) -> tuple[int, float, str]:
                started = time.perf_counter()
                answer = await http.post(path, json=body)
                return answer.status_code, time.perf_counter() - started, answer.text[:300]

            streaming = asyncio.create_task(stream())
            await asyncio.sleep(0.5)
            results = [await costly(path, body) for path, body in COSTLY]
            await streaming
            return gaps, results

    gaps, results = asyncio.run(scenario())
    for status, seconds, text in results:
        assert status in (400, 422), text
        assert "limit" in text or "larger than" in text, text
        assert seconds < 10, text  # generous: milliseconds on an idle machine
    assert max(gaps) < 5  # generous: the stream was never frozen by the refusals


def test_the_grammar_cache_is_bounded_by_bytes(model_path: Path) -> None:
    _lib.backend_init()
    params = _lib.model_default_params()
    params.vocab_only = True
    model = _lib.model_load(str(model_path), params)
    assert model is not None
    try:
        cache = GrammarCache(_lib.model_vocab(model), size=64, max_bytes=20_000)
        for i in range(6):
            enum = {"enum": [f"{i}-value-{j}" for j in range(300)]}
            cache.check(Grammar("root ::= answer", (JsonRule("answer", json.dumps(enum)),)))
            assert cache.cached_bytes <= 20_000 or i == 0
        tree = ISSUE_SCHEMAS[0][0]
        cache.check(Grammar("root ::= answer", (JsonRule("answer", json.dumps(tree)),)))
        cache.close()
        assert cache.cached_bytes == 0
    finally:
        _lib.model_free(model)
