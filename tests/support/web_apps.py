"""uvicorn ``--factory`` targets for the browser tests that need a scripted engine.

The FakeEngine is configured from ``WEBTEST_*`` environment variables (not ``CRIA_*``, which
belong to the settings tree): the reply text, the pause between tokens, slots, queue size,
context size and a start delay (a server that stays "loading").
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from app.api.app import create_app
from app.settings import Settings
from tests.support.fake_engine import FakeEngine


def fake_app() -> FastAPI:
    """The real app (settings from ``CRIA_*``) over a FakeEngine with a scripted reply."""
    reply = os.environ.get("WEBTEST_REPLY", "Hello from the fake engine, one word at a time.")
    engine = FakeEngine(
        reply=lambda _prompt: reply,
        token_delay_s=float(os.environ.get("WEBTEST_TOKEN_DELAY_S", "0.02")),
        n_slots=int(os.environ.get("WEBTEST_SLOTS", "4")),
        max_queue=int(os.environ.get("WEBTEST_MAX_QUEUE", "8")),
        n_ctx_slot=int(os.environ.get("WEBTEST_CTX", "256")),
        start_delay_s=float(os.environ.get("WEBTEST_START_DELAY_S", "0")),
    )
    return create_app(Settings(), engine)
