"""LoRA adapters over HTTP on the real model: the openai SDK names an adapter as the model, and
CRIA's frontend contract on ``/v1.3/chat/completions`` runs on the adapter named ``v1.3``.

One server for the module (``--lora`` twice: ``v1.3``, a random rank-4 adapter strong enough
to change this short reply, and ``zero``, a B = 0 adapter), small context and replies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.lora_writer import write_lora
from tests.support.server import ServerProcess, real_model_env, running_server
from tests.support.sse_client import EventSourceParser

KEY = "lora-key-51"
SYSTEM = "You are CRIA."
PROMPT = "Name a color."
CAP = 12


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("lora-http")
    v13 = write_lora(folder / "v13.gguf", model_path, seed=1, magnitude=0.1)
    zero = write_lora(folder / "zero.gguf", model_path, zero=True)
    env = real_model_env(
        model_path,
        api_key=KEY,
        parallel="4",
        ctx_size="512",
        lora=f"v1.3={v13},zero={zero}",
        cria_max_tokens=str(CAP),
        system_prompt=SYSTEM,
    )
    with running_server(env) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, timeout=120) as sdk:
        yield sdk


def chat(client: openai.OpenAI, model: str, **kw: object) -> tuple[str, str]:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        max_tokens=CAP,
        **kw,  # type: ignore[arg-type]
    )
    return reply.model, reply.choices[0].message.content or ""


def test_the_sdk_lists_and_uses_an_adapter_as_a_model(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"SmolLM2-135M-Instruct.Q4_1", "v1.3", "zero"}
    extra = models["v1.3"].model_extra or {}
    assert extra["parent"] == "SmolLM2-135M-Instruct.Q4_1"
    assert extra["root"].endswith("v13.gguf")
    assert extra["state"] == "loaded"
    base_model, base = chat(client, "SmolLM2-135M-Instruct.Q4_1", temperature=0)
    name, tuned = chat(client, "v1.3", temperature=0)
    zero_name, zero = chat(client, "zero", temperature=0)
    assert (base_model, name, zero_name) == ("SmolLM2-135M-Instruct.Q4_1", "v1.3", "zero")
    assert base
    assert tuned != base
    assert zero == base


def test_cria_version_path_runs_on_the_adapter(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "text/plain;charset=UTF-8"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as http:
        response = http.post("/v1.3/chat/completions", content=json.dumps({"prompt": PROMPT}))
        adapters = http.get("/lora-adapters").json()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = EventSourceParser().feed(response.text)
    assert events[-1].data == "[DONE]"
    text = "".join(event.data for event in events[:-1])
    # The contract's default (seeded) sampling and cap, through the OpenAI route on v1.3.
    assert text == chat(client, "v1.3")[1]
    assert text != chat(client, "SmolLM2-135M-Instruct.Q4_1")[1]
    assert [(a["id"], a["name"], a["scale"]) for a in adapters] == [
        (0, "v1.3", 1.0),
        (1, "zero", 1.0),
    ]
