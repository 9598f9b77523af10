"""uvicorn ``--factory`` targets for the browser tests that need a scripted engine.

The FakeEngine is configured from ``WEBTEST_*`` environment variables (not ``CRIA_*``, which
belong to the settings tree): the reply text, the pause between tokens, slots, queue size,
context size, a start delay (a server that stays "loading"), and ``WEBTEST_FAIL_AFTER``: end
every stream with an engine error after that many tokens (the final SSE error event).

``RecordChatRequests`` wraps the app and keeps every ``/v1/chat/completions`` body, served
back at ``GET /_test/requests``: tests check on the server side what the page sent.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.app import create_app
from app.engine.types import FinishReason, GenerationRequest, TokenEvent, Usage
from app.settings import Settings
from tests.support.fake_engine import FakeEngine

ENGINE_FAILURE = "The engine failed while generating (scripted by the test)."
RECORDED_PATH = "/_test/requests"
CHAT_PATH = "/v1/chat/completions"


class RecordChatRequests:
    """ASGI middleware: records the JSON body of every chat request, then passes it on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.bodies: list[Any] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == RECORDED_PATH:
            await JSONResponse(self.bodies)(scope, receive, send)
            return
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != CHAT_PATH:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body", False))
        raw = b"".join(chunks)
        try:
            self.bodies.append(json.loads(raw))
        except ValueError:
            self.bodies.append(None)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.app(scope, replay, send)


class FailingEngine(FakeEngine):
    """A FakeEngine whose streams end with FinishReason.ERROR after ``fail_after`` tokens."""

    def __init__(self, fail_after: int, **options: Any) -> None:
        super().__init__(**options)
        self.fail_after = fail_after

    def submit(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        return self._fail(super().submit(request), request.request_id)

    async def _fail(self, stream: AsyncIterator[TokenEvent], rid: str) -> AsyncIterator[TokenEvent]:
        sent = 0
        try:
            async for event in stream:
                if event.is_final or sent >= self.fail_after:
                    break
                sent += 1
                yield event
            usage = Usage(prompt_tokens=1, cached_prompt_tokens=0, completion_tokens=sent)
            yield TokenEvent(
                rid, finish_reason=FinishReason.ERROR, error=ENGINE_FAILURE, usage=usage
            )
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # it is an async generator


def fake_app() -> FastAPI:
    """The real app (settings from ``CRIA_*``) over a FakeEngine with a scripted reply."""
    reply = os.environ.get("WEBTEST_REPLY", "Hello from the fake engine, one word at a time.")
    options: dict[str, Any] = {
        "reply": lambda _prompt: reply,
        "token_delay_s": float(os.environ.get("WEBTEST_TOKEN_DELAY_S", "0.02")),
        "n_slots": int(os.environ.get("WEBTEST_SLOTS", "4")),
        "max_queue": int(os.environ.get("WEBTEST_MAX_QUEUE", "8")),
        "n_ctx_slot": int(os.environ.get("WEBTEST_CTX", "256")),
        "start_delay_s": float(os.environ.get("WEBTEST_START_DELAY_S", "0")),
    }
    fail_after = os.environ.get("WEBTEST_FAIL_AFTER")
    engine = (
        FakeEngine(**options) if fail_after is None else FailingEngine(int(fail_after), **options)
    )
    app = create_app(Settings(), engine)
    app.add_middleware(RecordChatRequests)
    return app
