"""Ollama's /api/pull and /api/delete over a library of tiny GGUFs served by fake engines:
progress lines, the pulled model listed and answering by name, delete and its refusals, the
presets' alias and context in /health and /v1/models."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.api.library import library_entries
from app.engine.router import ModelRouter
from app.models.library import scan_library
from tests.support.api import app_client
from tests.support.fake_engine import FakeEngine
from tests.support.file_server import Route, serve_files
from tests.support.gguf_writer import TINY_TENSORS, gguf_bytes, tiny_llama_metadata

GGUF = gguf_bytes(tiny_llama_metadata(), TINY_TENSORS)


@pytest.fixture
async def library_app(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("alpha", "beta"):
        (models / f"{name}.gguf").write_bytes(GGUF)
    options = {
        "model": str(models / "alpha.gguf"),
        "models_dir": models,
        "presets": {"beta": {"alias": "bee", "ctx-size": 128, "pinned": True, "embeddings": True}},
    }
    async with app_client(FakeEngine(), **options) as (client, app):
        runtime = app.state.runtime
        entries = library_entries(runtime.settings, models / "alpha.gguf", scan_library(models))
        runtime.router = ModelRouter(entries, lambda _: FakeEngine(), default_id="alpha")
        await runtime.router.engine()
        yield client, app
        await runtime.router.stop()


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}


async def test_pull_streams_progress_then_the_model_answers_by_name(
    library_app: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, _ = library_app
    with serve_files({"/files/gamma.Q4_1.gguf": Route(GGUF)}) as files:
        url = f"{files.url}/files/gamma.Q4_1.gguf"
        response = await client.post("/api/pull", json={"model": url})
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-1] == {"status": "success"}
    assert any(line.get("completed") == len(GGUF) == line.get("total") for line in lines)
    assert any(line.get("digest", "").startswith("sha256:") for line in lines)
    tags = (await client.get("/api/tags")).json()["models"]
    assert "gamma.Q4_1:latest" in [m["name"] for m in tags]
    answer = await client.post("/api/chat", json=chat("gamma.Q4_1"))
    assert answer.status_code == 200, answer.text
    # Deleted: gone from the list, and its name no longer known.
    deleted = await client.request("DELETE", "/api/delete", json={"model": "gamma.Q4_1"})
    assert deleted.status_code == 200, deleted.text
    ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
    assert ids == ["alpha", "bee"]
    again = await client.request("DELETE", "/api/delete", json={"model": "gamma.Q4_1"})
    assert again.status_code == 404
    assert "gamma.Q4_1" in again.json()["error"]


async def test_pull_without_stream_and_its_errors(
    library_app: tuple[httpx.AsyncClient, FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = library_app
    with serve_files({"/g.gguf": Route(GGUF), "/bad.gguf": Route(b"nope" * 100)}) as files:
        done = await client.post(
            "/api/pull", json={"model": f"{files.url}/g.gguf", "stream": False}
        )
        assert done.json() == {"status": "success"}
        bad = await client.post(
            "/api/pull", json={"model": f"{files.url}/bad.gguf", "stream": False}
        )
        assert bad.status_code == 502
        assert "not a usable GGUF" in bad.json()["error"]
        streamed = await client.post("/api/pull", json={"model": f"{files.url}/bad.gguf"})
        assert "not a usable GGUF" in json.loads(streamed.text.splitlines()[-1])["error"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = await client.post("/api/pull", json={"name": "hf://o/r/x.gguf", "stream": False})
    assert offline.status_code == 502
    assert "HF_HUB_OFFLINE" in offline.json()["error"]
    for stream in (False, True):  # checked before the stream starts
        unknown = await client.post("/api/pull", json={"model": "llama3:8b", "stream": stream})
        assert unknown.status_code == 400
        assert "Cannot pull 'llama3:8b'" in unknown.json()["error"]


async def test_delete_refuses_the_default_and_pinned_models(
    library_app: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, app = library_app
    for name, why in (("alpha", "default"), ("beta", "pinned")):
        refused = await client.request("DELETE", "/api/delete", json={"model": name})
        assert refused.status_code == 409
        assert why in refused.json()["error"]
    assert (app.state.runtime.settings.models_dir / "beta.gguf").is_file()


async def test_a_preset_shows_in_health_and_models(
    library_app: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, _ = library_app
    models = (await client.get("/health")).json()["models"]
    bee = next(m for m in models if m["id"] == "bee")
    assert (bee["context_length"], bee["pinned"], bee["state"]) == (128, True, "unloaded")
    assert (await client.get("/v1/models/beta")).json()["id"] == "bee"
    shown = (await client.post("/api/show", json={"model": "bee"})).json()
    assert shown["capabilities"] == ["completion", "embedding"]
    alpha = (await client.post("/api/show", json={"model": "alpha"})).json()
    assert alpha["capabilities"] == ["completion"]
