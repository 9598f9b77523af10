"""LoRA adapters over HTTP (fake engine): listed as models, selected by name, CRIA version or
llama-server's ``lora`` list; ``/lora-adapters``; health and metrics list them."""

from __future__ import annotations

import pytest

from app.engine.types import LoraScale
from tests.support.api import app_client
from tests.support.fake_engine import FakeEngine

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def engine() -> FakeEngine:
    return FakeEngine(adapters=("v1.2", "v1.3"))


async def test_models_list_each_adapter_with_its_base() -> None:
    async with app_client(engine()) as (client, _):
        models = (await client.get("/v1/models")).json()["data"]
        one = (await client.get("/v1/models/v1.3")).json()
        tags = (await client.get("/api/tags")).json()["models"]
    assert [m["id"] for m in models] == ["fake-model", "v1.2", "v1.3"]
    assert "parent" not in models[0]
    assert models[2]["parent"] == "fake-model"
    assert models[2]["root"] == "/models/v1.3.lora.gguf"
    assert one["id"] == "v1.3"
    assert one["parent"] == "fake-model"
    assert [t["name"] for t in tags] == ["fake-model:latest", "v1.2:latest", "v1.3:latest"]
    assert tags[1]["details"]["parent_model"] == "fake-model:latest"


@pytest.mark.parametrize(
    ("body", "model", "lora"),
    [
        ({"model": "v1.3"}, "v1.3", (LoraScale(1),)),
        ({"model": "V1.2"}, "v1.2", (LoraScale(0),)),
        ({"model": "gpt-4o"}, "fake-model", ()),
        ({"lora": [{"id": 1, "scale": 0.5}]}, "fake-model", (LoraScale(1, 0.5),)),
        ({"model": "v1.2", "lora": [{"id": 1}]}, "v1.2", (LoraScale(0), LoraScale(1))),
    ],
)
async def test_chat_runs_on_the_adapter_it_names(
    body: dict[str, object], model: str, lora: tuple[LoraScale, ...]
) -> None:
    fake = engine()
    async with app_client(fake) as (client, _):
        response = await client.post("/v1/chat/completions", json=CHAT | body)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == model
    assert fake.submitted[-1].lora == lora


async def test_completions_and_ollama_name_adapters_too() -> None:
    fake = engine()
    async with app_client(fake) as (client, _):
        completion = await client.post(
            "/v1/completions", json={"model": "v1.3", "prompt": "Hi", "max_tokens": 3}
        )
        ollama = await client.post(
            "/api/chat",
            json={
                "model": "v1.2:latest",
                "messages": [{"role": "user", "content": "Hi"}],
                "stream": False,
            },
        )
    assert completion.json()["model"] == "v1.3"
    assert ollama.json()["model"] == "v1.2"
    assert [r.lora for r in fake.submitted] == [(LoraScale(1),), (LoraScale(0),)]


async def test_cria_version_path_selects_the_adapter() -> None:
    fake = engine()
    async with app_client(fake) as (client, _):
        on_adapter = await client.post("/v1.3/chat/completions", json={"prompt": "Hi"})
        other = await client.post("/v2.0/chat/completions", json={"prompt": "Hi"})
        v1 = await client.post("/v1/chat/completions", json={"prompt": "Hi"})
    assert on_adapter.status_code == other.status_code == v1.status_code == 200
    assert [r.lora for r in fake.submitted] == [(LoraScale(1),), (), ()]


async def test_unknown_adapter_id_in_lora_is_a_400() -> None:
    async with app_client(engine()) as (client, _):
        response = await client.post("/v1/chat/completions", json=CHAT | {"lora": [{"id": 9}]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "lora"


async def test_lora_adapters_get_and_post() -> None:
    async with app_client(engine()) as (client, _):
        before = (await client.get("/lora-adapters")).json()
        done = await client.post("/lora-adapters", json=[{"id": 1, "scale": 0.25}])
        after = (await client.get("/lora-adapters")).json()
        bad_id = await client.post("/lora-adapters", json=[{"id": 4, "scale": 1.0}])
        no_scale = await client.post("/lora-adapters", json=[{"id": 0}])
        not_list = await client.post("/lora-adapters", json={"id": 0, "scale": 1.0})
        metrics = (await client.get("/metrics")).text
        health = (await client.get("/health")).json()
    assert before == [
        {
            "id": 0,
            "path": "/models/v1.2.lora.gguf",
            "scale": 1.0,
            "name": "v1.2",
            "base_model": "fake-model",
        },
        {
            "id": 1,
            "path": "/models/v1.3.lora.gguf",
            "scale": 1.0,
            "name": "v1.3",
            "base_model": "fake-model",
        },
    ]
    assert done.status_code == 200
    assert done.json() == {"success": True}
    assert [a["scale"] for a in after] == [1.0, 0.25]
    assert bad_id.status_code == no_scale.status_code == not_list.status_code == 400
    assert 'cria_lora_adapter_scale{id="1",name="v1.3"} 0.25' in metrics
    assert health["adapters"] == ["v1.2", "v1.3"]


async def test_no_adapters_means_empty_lists() -> None:
    async with app_client(FakeEngine()) as (client, _):
        assert (await client.get("/lora-adapters")).json() == []
        assert "cria_lora_adapter" not in (await client.get("/metrics")).text
        assert len((await client.get("/v1/models")).json()["data"]) == 1


async def test_strict_model_names_accept_the_adapters_of_the_model() -> None:
    fake = engine()
    lora = ["v1.2=/models/v1.2.lora.gguf", "v1.3=/models/v1.3.lora.gguf"]
    async with app_client(fake, strict_model_names=True, lora=lora) as (client, _):
        ok = await client.post("/v1/chat/completions", json=CHAT | {"model": "v1.3"})
        cria = await client.post("/v1.3/chat/completions", json={"prompt": "Hi"})
        unknown = await client.post("/v1/chat/completions", json=CHAT | {"model": "v9"})
    assert ok.status_code == cria.status_code == 200
    assert unknown.status_code == 404
    assert [r.lora for r in fake.submitted] == [(LoraScale(1),), (LoraScale(1),)]


async def test_anthropic_and_responses_name_adapters_too() -> None:
    fake = engine()
    async with app_client(fake) as (client, _):
        messages = await client.post(
            "/v1/messages",
            json={
                "model": "v1.3",
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hi"}],
            },
        )
        responses = await client.post(
            "/v1/responses", json={"model": "v1.2", "input": "Hi", "max_output_tokens": 16}
        )
    assert messages.status_code == 200, messages.text
    assert responses.status_code == 200, responses.text
    assert messages.json()["model"] == "v1.3"
    assert responses.json()["model"] == "v1.2"
    assert [r.lora for r in fake.submitted] == [(LoraScale(1),), (LoraScale(0),)]
