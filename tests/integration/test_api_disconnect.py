"""A client that goes away aborts its request in the engine (driven at the ASGI level).

The app is called directly with a ``receive`` that reports ``http.disconnect`` on cue,
so the test can check that ``engine.abort`` was called with the request's id.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.api import app_client, call_then_disconnect, eventually
from tests.support.fake_engine import RecordingEngine


@pytest.mark.parametrize(
    ("stream", "status"),
    # A stream has answered 200 already; a non-streamed request is logged as 499
    # ("client closed request"), which nobody reads.
    [(True, 200), (False, 499)],
    ids=["streamed", "non-streamed"],
)
async def test_disconnect_aborts_the_engine_request(stream: bool, status: int) -> None:
    engine = RecordingEngine()
    async with app_client(engine) as (_, app):
        gone = asyncio.Event()
        body = {"messages": [{"role": "user", "content": "go"}], "stream": stream}
        call = asyncio.create_task(call_then_disconnect(app, "/v1/chat/completions", body, gone))
        await eventually(lambda: engine._generated_total >= 5)
        gone.set()
        sent = await call
        await eventually(lambda: engine.stats().slots_busy == 0, timeout_s=1.0)
    (request,) = engine.submitted
    assert engine.abort_calls == [request.request_id]
    assert engine._generated_total < 100
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == status


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "go"}], "stream": True}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "go"}]}),
        ("/v1/chat/completions", {"prompt": "go"}),
        ("/v1/completions", {"prompt": "go", "stream": True}),
        ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "go"}]}),
        ("/generate_stream", {"inputs": "go"}),
    ],
    ids=["chat-stream", "chat", "cria", "completions-stream", "ollama", "tgi-stream"],
)
async def test_a_client_leaving_before_the_first_event_frees_its_slot_at_once(
    path: str, body: dict[str, object]
) -> None:
    # The engine is slow to start (the first token would come after 2 s): the client has
    # left before any event exists, so only the stream handle can abort the request.
    engine = RecordingEngine(token_delay_s=2.0)
    async with app_client(engine) as (_, app):
        gone = asyncio.Event()
        gone.set()  # disconnect as soon as the body is read
        call = asyncio.create_task(call_then_disconnect(app, path, body, gone))
        await eventually(lambda: len(engine.submitted) == 1, timeout_s=5.0)
        await asyncio.wait_for(call, timeout=1.0)
        await eventually(lambda: engine.stats().slots_busy == 0, timeout_s=1.0)
        (request,) = engine.submitted
        assert engine.abort_calls == [request.request_id]
        assert engine._generated_total == 0  # no token was generated: aborted, not finished
