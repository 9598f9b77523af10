"""A client that goes away aborts its request in the engine (driven at the ASGI level).

The app is called directly with a ``receive`` that reports ``http.disconnect`` on cue,
so the test can check that ``engine.abort`` was called with the request's id.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi import FastAPI

from tests.support.api import app_client, eventually
from tests.support.fake_engine import FakeEngine

LONG = " ".join(f"w{i}" for i in range(200))


class RecordingEngine(FakeEngine):
    """Records every abort call (the fake ignores aborts of streams already closed)."""

    def __init__(self) -> None:
        super().__init__(reply=lambda prompt: LONG, token_delay_s=0.01)
        self.abort_calls: list[str] = []

    def abort(self, request_id: str) -> None:
        self.abort_calls.append(request_id)
        super().abort(request_id)


def http_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }


async def call_then_disconnect(
    app: FastAPI, body: dict[str, Any], gone: asyncio.Event
) -> list[dict[str, Any]]:
    """Run one request; ``receive`` reports a disconnect once ``gone`` is set."""
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(http_scope("/v1/chat/completions"), receive, send), timeout=10)
    return sent


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
        call = asyncio.create_task(call_then_disconnect(app, body, gone))
        await eventually(lambda: engine._generated_total >= 5)
        gone.set()
        sent = await call
        await eventually(lambda: engine.stats().slots_busy == 0, timeout_s=1.0)
    (request,) = engine.submitted
    assert engine.abort_calls == [request.request_id]
    assert engine._generated_total < 100
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == status
