"""A scripted OpenAI-style server for the page's browser tests, at the HTTP layer.

It serves the real page (``app.web.routes``) next to a hand-written ``/v1/models`` and a
``/v1/chat/completions`` that streams scripted chunks the real server does not send yet:
``delta.reasoning_content`` (and ``delta.reasoning``), ``delta.tool_calls`` fragments,
several models with a load state, 429/503 answers with ``Retry-After``. The reply is chosen
by a keyword in the last user message (see ``SCRIPTS``); anything else is echoed back.

Every request body is recorded and served back at ``GET /_test/requests`` so a test can
check, on the server side, the history and the model the page sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.web import routes as web_routes

RECORDED_PATH = "/_test/requests"

DEFAULT_MODELS: list[Any] = [
    {"id": "alpha-7b", "object": "model", "created": 0, "owned_by": "test", "state": "loaded"},
    {"id": "beta-1b", "object": "model", "created": 0, "owned_by": "test", "loaded": False},
    {"id": "gamma-3b", "object": "model", "created": 0, "owned_by": "test"},
    {"object": "model"},  # malformed: no id, the page must skip it
    "not a model",
]

REASONING = ["The user", " asks", " for", " the", " answer.", " It", " is", " 42."]
TOOL_ARGS = ['{"city":', ' "Par', 'is"}']
CODE_REPLY = "Two snippets:\n\n```python\nprint('one')\n```\n\nand\n\n```sh\necho two\n```\n"

Delta = dict[str, Any]


def _words(text: str) -> list[Delta]:
    pieces = text.split(" ")
    return [{"content": w if i == 0 else f" {w}"} for i, w in enumerate(pieces)]


def _reasoning(field: str) -> list[Delta]:
    return [{field: piece} for piece in REASONING] + _words("The answer is 42.")


def _tool_call() -> list[Delta]:
    first: Delta = {
        "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather"}}
        ]
    }
    rest = [{"tool_calls": [{"index": 0, "function": {"arguments": a}}]} for a in TOOL_ARGS]
    return [first, *rest]


SCRIPTS: dict[str, Callable[[str, int], list[Delta]]] = {
    "think-alt": lambda _text, _n: _reasoning("reasoning"),
    "think": lambda _text, _n: _reasoning("reasoning_content"),
    "tool": lambda _text, _n: _tool_call(),
    "code": lambda _text, _n: _words(CODE_REPLY),
    "slow": lambda _text, _n: _words(" ".join(["word"] * 400)),
}


def _script(text: str, n: int) -> list[Delta]:
    for keyword, script in SCRIPTS.items():
        if keyword in text:
            return script(text, n)
    return _words(f"Reply {n} to: {text}")


def _chunk(delta: Delta, model: str, finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time())}
    body.update(model=model, choices=[choice])
    return f"data: {json.dumps(body)}\n\n"


async def _stream(deltas: list[Delta], model: str, delay_s: float) -> AsyncIterator[str]:
    yield _chunk({"role": "assistant", "content": ""}, model)
    reasoning = sum(1 for d in deltas if "reasoning_content" in d or "reasoning" in d)
    for delta in deltas:
        await asyncio.sleep(delay_s)
        yield _chunk(delta, model)
    finish = "tool_calls" if any("tool_calls" in d for d in deltas) else "stop"
    yield _chunk({}, model, finish)
    n = len(deltas)
    usage: dict[str, Any] = {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    yield f"data: {json.dumps({'id': 'chatcmpl-test', 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


def _refusal(text: str) -> Response | None:
    if "busy" in text:
        body = {"error": {"message": "Every slot is busy.", "type": "overloaded", "code": None}}
        return JSONResponse(body, status_code=429, headers={"Retry-After": "7"})
    if "loading" in text:
        body = {"error": {"message": "Loading.", "type": "unavailable", "code": "model_loading"}}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "30"})
    return None


def scripted_app() -> FastAPI:
    """The page plus the scripted OpenAI routes (a uvicorn ``--factory`` target)."""
    app = FastAPI()
    app.include_router(web_routes.router)
    recorded: list[Any] = []
    models = json.loads(os.environ.get("WEBTEST_MODELS", "null")) or DEFAULT_MODELS
    delay_s = float(os.environ.get("WEBTEST_TOKEN_DELAY_S", "0.01"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "slots_busy": 0, "queue_length": 0}

    @app.get("/model-card")
    async def model_card() -> dict[str, Any]:
        return {"model_name": "scripted", "context_length": 4096, "quantization": "Q4_0"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": models}

    @app.get(RECORDED_PATH)
    async def requests() -> list[Any]:
        return recorded

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        recorded.append(body)
        user = [m for m in body.get("messages", []) if m.get("role") == "user"]
        text = str(user[-1]["content"]) if user else ""
        refusal = _refusal(text)
        if refusal is not None:
            return refusal
        deltas = _script(text, len(recorded))
        delay = 0.2 if "slow" in text else delay_s
        stream = _stream(deltas, str(body.get("model") or "default"), delay)
        return StreamingResponse(stream, media_type="text/event-stream")

    return app
