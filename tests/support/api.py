"""In-process app clients for the HTTP tests: the whole app, lifespan included, over ASGI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from app.api.app import create_app
from app.engine.protocol import Engine
from app.settings import Settings
from tests.support.fake_engine import FakeEngine


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: a dummy model ref (the engine is given) and the overrides."""
    values: dict[str, Any] = {"model": "fake-model", "keepalive_s": 0.05}
    values.update(overrides)
    return Settings(**values)


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until ``predicate()`` holds (polling), or fail after ``timeout_s``."""
    for _ in range(int(timeout_s / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout_s} s")


@asynccontextmanager
async def app_client(
    engine: Engine | None = None, *, wait_ready: bool = True, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """An httpx client on a fresh app (lifespan running) with ``engine`` (a FakeEngine)."""
    engine = engine if engine is not None else FakeEngine()
    app = create_app(make_settings(**settings), engine)
    async with app.router.lifespan_context(app):
        if wait_ready:
            for _ in range(200):
                if engine.health().ready:
                    break
                await asyncio.sleep(0.01)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield client, app


def asgi_scope(path: str, method: str = "POST") -> dict[str, Any]:
    """A plain HTTP scope for calling the app directly (JSON body, Host localhost)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
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
    app: FastAPI, path: str, body: dict[str, Any], gone: asyncio.Event
) -> list[dict[str, Any]]:
    """Run one request on the app; ``receive`` reports a disconnect once ``gone`` is set.

    Returns the ASGI messages the app sent.
    """
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

    await asyncio.wait_for(app(asgi_scope(path), receive, send), timeout=10)
    return sent
