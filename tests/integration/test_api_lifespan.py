"""The lifespan without an injected engine: the model is resolved and loaded in the background.

A model that cannot be found or loaded leaves the server up, answering 503 with the reason.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from app.api.app import create_app
from app.settings import Settings


async def health_when_settled(client: httpx.AsyncClient) -> httpx.Response:
    response = await client.get("/health")
    for _ in range(200):
        if response.json()["status"] != "loading":
            break
        await asyncio.sleep(0.01)
        response = await client.get("/health")
    return response


async def serve_and_ask(settings: Settings) -> tuple[httpx.Response, httpx.Response]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            health = await health_when_settled(client)
            chat = await client.post(
                "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
            )
    return health, chat


async def test_missing_model_leaves_the_server_up_with_503(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.gguf"
    health, chat = await serve_and_ask(Settings(model=str(missing), models_dir=tmp_path))
    assert health.status_code == 503
    assert health.json()["status"] == "dead"
    assert "nothing-here.gguf" in health.json()["reason"]
    assert chat.status_code == 503
    assert chat.json()["error"]["code"] == "model_load_failed"
    assert "nothing-here.gguf" in chat.json()["error"]["message"]


async def test_a_file_that_is_not_gguf_is_a_503_with_the_reason(tmp_path: Path) -> None:
    fake = tmp_path / "notes.gguf"
    fake.write_text("this is not a model\n" * 100)
    health, chat = await serve_and_ask(Settings(model=str(fake), models_dir=tmp_path))
    assert health.status_code == 503
    assert health.json()["status"] == "dead"
    assert "notes.gguf" in health.json()["reason"]
    assert chat.json()["error"]["code"] == "model_load_failed"
