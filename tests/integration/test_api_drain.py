"""The drain (in-process, FakeEngine): 503 for new requests, /health "draining", running
requests finish, and at the deadline the rest end with "server shutting down" then [DONE]."""

from __future__ import annotations

import asyncio
from typing import Any

from app.api.runtime import EngineRuntime
from tests.support.api import app_client, eventually
from tests.support.fake_engine import FakeEngine
from tests.support.sse_client import parse_sse

USER = [{"role": "user", "content": "Hello"}]
STREAM = {"messages": USER, "stream": True}
LONG = " ".join(f"w{i}" for i in range(200))


def assert_shutdown_error(error: dict[str, Any]) -> None:
    assert error["code"] == "server_shutting_down"
    assert error["type"] == "server_error"
    assert "shutting down" in error["message"]


async def test_drain_refuses_new_work_and_lets_running_streams_finish() -> None:
    engine = FakeEngine(reply=lambda p: "one two three four five six", token_delay_s=0.05)
    async with app_client(engine) as (client, app):
        runtime: EngineRuntime = app.state.runtime
        running = asyncio.create_task(client.post("/v1/chat/completions", json=STREAM))
        await eventually(lambda: engine.stats().requests_active == 1)
        drain = asyncio.create_task(runtime.drain(10.0))
        await eventually(lambda: runtime.draining)
        refused = await client.post("/v1/chat/completions", json={"messages": USER})
        cria = await client.post("/v1/chat/completions", content=b'{"prompt": "x"}')
        models = await client.get("/v1/models")
        health = await client.get("/health")
        page = await client.get("/")
        ended = await drain
        response = await running
    assert ended == 0
    for answer in (refused, cria, models):
        assert answer.status_code == 503
        assert_shutdown_error(answer.json()["error"])
        assert int(answer.headers["retry-after"]) > 0
        assert answer.headers["connection"] == "close"
    assert health.status_code == 503
    assert health.json()["status"] == "draining"
    assert page.status_code == 200  # the static page is no work
    events = parse_sse(response.text)
    assert events[-1].data == "[DONE]"
    assert events[-2].json()["choices"][0]["finish_reason"] == "stop"
    assert len(engine.submitted) == 1  # nothing new reached the engine


async def test_deadline_ends_the_rest_with_the_shutdown_error_then_done() -> None:
    engine = FakeEngine(reply=lambda p: LONG, token_delay_s=0.02)
    async with app_client(engine) as (client, app):
        runtime: EngineRuntime = app.state.runtime
        openai_stream = asyncio.create_task(client.post("/v1/chat/completions", json=STREAM))
        cria_stream = asyncio.create_task(
            client.post("/v1/chat/completions", content=b'{"prompt": "x"}')
        )
        whole = asyncio.create_task(client.post("/v1/chat/completions", json={"messages": USER}))
        await eventually(lambda: engine.stats().requests_active == 3)
        ended = await runtime.drain(0.2)
        responses = await asyncio.gather(openai_stream, cria_stream, whole)
    assert ended == 3
    assert engine.state == "stopped"  # the model is freed at the deadline
    openai_events, cria_events = (parse_sse(r.text) for r in responses[:2])
    for events in (openai_events, cria_events):
        assert events[-1].data == "[DONE]"
        assert_shutdown_error(events[-2].json()["error"])
    assert openai_events[0].json()["choices"][0]["delta"]["role"] == "assistant"
    assert cria_events[0].data == "w0"  # raw text, then the JSON error event
    assert responses[2].status_code == 503
    assert_shutdown_error(responses[2].json()["error"])
