"""Real model, real uvicorn: a library of three models (hard links of the default model under
three names) served by name, loaded on demand, the least recently used one unloaded to make
room under --max-loaded-models 2, Ollama's keep_alive honoured, llama-server's
/models/load and /models/unload, and the default model never unloaded."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, real_model_env, running_server


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    library = tmp_path_factory.mktemp("library")
    for name in ("alpha", "beta", "gamma"):
        link_or_copy(model_path, library / f"{name}.gguf")
    env = real_model_env(
        library / "alpha.gguf",
        models_dir=str(library),
        max_loaded_models="2",
        parallel="2",
        ctx_size="256",
    )
    with running_server(env) as process:
        yield process


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 4,
        "temperature": 0.0,
        **extra,
    }


async def states(client: httpx.AsyncClient) -> dict[str, str]:
    listed = (await client.get("/v1/models")).json()["data"]
    return {model["id"]: model["state"] for model in listed}


async def test_models_answer_by_name_and_the_lru_one_makes_room(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        assert await states(client) == {"alpha": "loaded", "beta": "unloaded", "gamma": "unloaded"}
        beta = await client.post("/v1/chat/completions", json=chat("Beta.gguf"))
        assert beta.status_code == 200, beta.text
        assert beta.json()["model"] == "beta"
        assert await states(client) == {"alpha": "loaded", "beta": "loaded", "gamma": "unloaded"}
        # Two may stay loaded: gamma evicts beta (alpha is the default model and stays).
        gamma = await client.post("/v1/chat/completions", json=chat("gamma:latest"))
        assert gamma.status_code == 200, gamma.text
        assert gamma.json()["model"] == "gamma"
        assert await states(client) == {"alpha": "loaded", "beta": "unloaded", "gamma": "loaded"}
        running = (await client.get("/api/ps")).json()["models"]
        assert sorted(m["name"] for m in running) == ["alpha:latest", "gamma:latest"]
        tags = (await client.get("/api/tags")).json()["models"]
        assert sorted(m["name"] for m in tags) == ["alpha:latest", "beta:latest", "gamma:latest"]
        assert all(m["details"]["quantization_level"] == "Q4_1" for m in tags)
        health = (await client.get("/health")).json()
        assert [m["id"] for m in health["models"]] == ["alpha", "beta", "gamma"]
        assert health["models"][0]["pinned"] is True
        assert health["models"][1]["memory_estimate_bytes"] > 90_000_000


async def test_a_stream_on_one_model_runs_on_while_another_loads(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        await client.post("/models/unload", json={"model": "beta"})
        long = chat("alpha", max_tokens=48, stream=True, ignore_eos=True)

        async def stream_alpha() -> int:
            async with client.stream("POST", "/v1/chat/completions", json=long) as response:
                body = await response.aread()
            assert b"data: [DONE]" in body
            return response.status_code

        alpha, beta = await asyncio.gather(
            stream_alpha(), client.post("/v1/chat/completions", json=chat("beta"))
        )
        assert alpha == 200
        assert beta.status_code == 200, beta.text


async def test_load_unload_and_keep_alive(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        loaded = await client.post("/models/load", json={"model": "gamma"})
        assert loaded.json() == {"model": "gamma", "success": True}
        assert (await states(client))["gamma"] == "loaded"
        unloaded = await client.post("/models/unload", json={"model": "gamma"})
        assert unloaded.json() == {"model": "gamma", "success": True}
        assert (await states(client))["gamma"] == "unloaded"
        # The default model stays; an unknown name is a 404 listing the library.
        kept = await client.post("/models/unload", json={"model": "alpha"})
        assert kept.json()["success"] is False
        missing = await client.post("/models/load", json={"model": "delta"})
        assert missing.status_code == 404
        assert "alpha, beta, gamma" in missing.json()["error"]["message"]
        # Ollama: an empty prompt loads; keep_alive 0 unloads right after the answer.
        ollama = {"model": "gamma", "prompt": "", "keep_alive": 0, "stream": False}
        answer = await client.post("/api/generate", json=ollama)
        assert answer.status_code == 200, answer.text
        for _ in range(100):
            if (await states(client))["gamma"] == "unloaded":
                break
            await asyncio.sleep(0.1)
        assert (await states(client))["gamma"] == "unloaded"
        # keep_alive "2s": loaded for about two seconds, then unloaded by itself.
        kept_briefly = {"model": "beta", "prompt": "Hi", "keep_alive": "2s", "stream": False}
        kept_briefly["options"] = {"num_predict": 2}
        assert (await client.post("/api/generate", json=kept_briefly)).status_code == 200
        (beta,) = [m for m in (await client.get("/api/ps")).json()["models"] if "beta" in m["name"]]
        assert not beta["expires_at"].startswith("2318")
        for _ in range(100):
            if (await states(client))["beta"] == "unloaded":
                break
            await asyncio.sleep(0.1)
        assert (await states(client))["beta"] == "unloaded"
