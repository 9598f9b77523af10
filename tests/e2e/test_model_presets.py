"""Real model, `cria serve`: a config file's preset (alias, ctx-size, system prompt) applied to
its model's worker, and Ollama's /api/pull from a local HTTP server, then a chat with the
pulled model by name, then /api/delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_model_library import link_or_copy
from tests.support.file_server import Route, serve_files
from tests.support.server import ServerProcess, real_model_env, running_server


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    library = tmp_path_factory.mktemp("presets")
    for name in ("alpha", "beta"):
        link_or_copy(model_path, library / f"{name}.gguf")
    config = library.parent / "cria.toml"
    config.write_text(
        '[presets.beta]\nalias = "bee"\nctx-size = 512\nsystem-prompt = "Reply in French."\n'
    )
    env = real_model_env(
        library / "alpha.gguf",
        models_dir=str(library),
        parallel="1",
        ctx_size="256",
        config=str(config),
    )
    with running_server(env, cli=True) as process:
        yield process


def chat(model: str) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 4,
        "temperature": 0.0,
    }


async def test_a_preset_gives_its_model_an_alias_and_a_context(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
        assert ids == ["alpha", "bee"]
        answer = await client.post("/v1/chat/completions", json=chat("beta"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "bee"
        # The preset's system prompt goes first in bee's chats, not in alpha's.
        for model, has_it in (("bee", True), ("alpha", False)):
            rendered = await client.post("/apply-template", json=chat(model))
            assert ("<|im_start|>system\nReply in French." in rendered.json()["prompt"]) is has_it
        running = {m["name"]: m for m in (await client.get("/api/ps")).json()["models"]}
        assert running["bee:latest"]["context_length"] == 512  # what the worker really made
        assert running["alpha:latest"]["context_length"] == 256
        health = {m["id"]: m for m in (await client.get("/health")).json()["models"]}
        assert health["bee"]["context_length"] == 512
        assert health["bee"]["state"] == "ready"


@pytest.fixture
def model_bytes(model_path: Path) -> bytes:
    return model_path.read_bytes()


async def test_pull_from_a_url_then_chat_by_name_then_delete(
    server: ServerProcess, model_bytes: bytes
) -> None:
    routes = {"/models/pulled.gguf": Route(model_bytes)}
    with serve_files(routes) as files:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            pulled = await client.post(
                "/api/pull", json={"model": f"{files.url}/models/pulled.gguf"}
            )
            lines = [json.loads(line) for line in pulled.text.splitlines()]
            assert lines[-1] == {"status": "success"}, lines[-3:]
            answer = await client.post("/v1/chat/completions", json=chat("pulled:latest"))
            assert answer.status_code == 200, answer.text
            assert answer.json()["model"] == "pulled"
            deleted = await client.request("DELETE", "/api/delete", json={"model": "pulled"})
            assert deleted.status_code == 200, deleted.text
            tags = [m["name"] for m in (await client.get("/api/tags")).json()["models"]]
            assert "pulled:latest" not in tags
            refused = await client.request("DELETE", "/api/delete", json={"model": "alpha"})
            assert refused.status_code == 409
