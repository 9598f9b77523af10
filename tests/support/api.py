"""In-process app clients for the HTTP tests: the whole app, lifespan included, over ASGI."""

from __future__ import annotations

import asyncio
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
