"""Structured output II over HTTP (fake engine): grammar compilation runs off the event
loop, ``schema_check`` reports what the grammar could not enforce, and the settings
``--strict-schemas`` / ``--json-max-items`` apply."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest

from app.engine.types import Grammar
from tests.support.api import app_client
from tests.support.fake_engine import FakeEngine

UNIQUE = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}


def _chat(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        **extra,
    }


class SlowCompile(FakeEngine):
    """Compiling a grammar takes a second (as a large one does) and records its thread."""

    def __init__(self) -> None:
        super().__init__(reply=lambda _: "[1, 1]")
        self.threads: list[str] = []
        self.grammars: list[Grammar] = []

    def check_grammar(self, grammar: Grammar) -> None:
        self.threads.append(threading.current_thread().name)
        self.grammars.append(grammar)
        time.sleep(1.0)


@pytest.mark.asyncio
async def test_compiling_a_grammar_leaves_the_event_loop_free() -> None:
    engine = SlowCompile()
    async with app_client(engine) as (client, _):
        chat = asyncio.create_task(client.post("/v1/chat/completions", json=_chat(UNIQUE)))
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        health = await client.get("/health")
        assert health.status_code == 200
        assert time.perf_counter() - started < 0.5  # not behind the one-second compile
        reply = await chat
    assert reply.status_code == 200
    assert engine.threads
    assert engine.threads[0] != threading.main_thread().name


@pytest.mark.asyncio
async def test_a_reply_the_grammar_could_not_enforce_is_reported() -> None:
    async with app_client(FakeEngine(reply=lambda _: "[1, 1]")) as (client, _):
        plain = (await client.post("/v1/chat/completions", json=_chat(UNIQUE))).json()
        check = plain["choices"][0]["schema_check"]
        assert check["valid"] is False
        assert "non-unique" in check["errors"][0]
        body = _chat(UNIQUE, stream=True)
        async with client.stream("POST", "/v1/chat/completions", json=body) as answer:
            lines = [json.loads(x[6:]) async for x in answer.aiter_lines() if x[6:7] == "{"]
        last = [c for line in lines for c in line["choices"] if c.get("finish_reason")]
        assert last[0]["schema_check"]["valid"] is False
        assert all("schema_check" not in c for line in lines[:-1] for c in line["choices"])
        free = await client.post("/v1/chat/completions", json={"messages": _chat({})["messages"]})
        assert "schema_check" not in free.json()["choices"][0]


@pytest.mark.asyncio
async def test_strict_schemas_refuses_what_the_grammar_cannot_enforce() -> None:
    async with app_client(FakeEngine(reply=lambda _: "[1, 2]"), strict_schemas=True) as (client, _):
        refused = await client.post("/v1/chat/completions", json=_chat(UNIQUE))
        assert refused.status_code == 400
        assert "uniqueItems" in refused.json()["error"]["message"]
        assert refused.json()["error"]["param"] == "response_format"
        bounded = _chat({"type": "integer", "minimum": 1, "maximum": 5})
        assert (await client.post("/v1/chat/completions", json=bounded)).status_code == 200


@pytest.mark.asyncio
async def test_json_max_items_bounds_the_grammar_not_the_check() -> None:
    engine = SlowCompile()
    async with app_client(engine, json_max_items=3, json_max_string=10) as (client, _):
        schema = {"type": "array", "items": {"type": "string"}}
        reply = await client.post("/v1/chat/completions", json=_chat(schema))
    rule = json.loads(engine.grammars[0].json_rules[0].schema)
    assert rule["maxItems"] == 3
    assert rule["items"]["maxLength"] == 10
    assert reply.json()["choices"][0]["schema_check"]["valid"] is False  # "[1, 1]": integers
