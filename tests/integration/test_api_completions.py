"""POST /v1/completions, GET /v1/models and GET /health over the in-process app."""

from __future__ import annotations

import asyncio

from tests.support.api import app_client, eventually
from tests.support.fake_engine import FakeEngine
from tests.support.sse_client import parse_sse

REPLY = "upon a time there was a llama."


def fake(**kwargs: object) -> FakeEngine:
    return FakeEngine(reply=lambda prompt: REPLY, **kwargs)  # type: ignore[arg-type]


async def test_completion_non_streamed() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        response = await client.post(
            "/v1/completions", json={"prompt": "Once", "max_tokens": 50, "temperature": 0}
        )
    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["choices"] == [
        {"text": REPLY, "index": 0, "logprobs": None, "finish_reason": "stop"}
    ]
    assert body["usage"]["completion_tokens"] == len(REPLY.split(" "))
    request = engine.submitted[0]
    assert request.prompt == "Once"  # no chat template for plain completions
    assert request.sampling.temperature == 0.0


async def test_completion_stream_and_usage_chunk() -> None:
    body = {"prompt": "Once", "stream": True, "stream_options": {"include_usage": True}}
    async with app_client(fake()) as (client, _):
        response = await client.post("/v1/completions", json=body)
    events = parse_sse(response.text)
    assert events[-1].data == "[DONE]"
    chunks = [event.json() for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"text_completion"}
    text = "".join(chunk["choices"][0]["text"] for chunk in chunks[:-1])
    assert text == REPLY
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(REPLY.split(" "))


async def test_completion_prompt_forms() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        listed = await client.post("/v1/completions", json={"prompt": ["Once"]})
        tokens = await client.post("/v1/completions", json={"prompt": [1, 2, 3]})
        two = await client.post("/v1/completions", json={"prompt": ["a", "b"]})
        echo = await client.post("/v1/completions", json={"prompt": "a", "echo": True})
        missing = await client.post("/v1/completions", json={"max_tokens": 3})
    assert listed.status_code == 200
    assert tokens.status_code == 200
    assert engine.submitted[1].prompt == (1, 2, 3)
    for bad, param in ((two, "prompt"), (echo, "echo"), (missing, "prompt")):
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == param


async def test_completion_stop_and_length() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        stopped = await client.post("/v1/completions", json={"prompt": "x", "stop": "llama"})
        capped = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert engine.submitted[0].sampling.stop == ("llama",)
    assert stopped.json()["choices"][0]["finish_reason"] == "stop"
    assert capped.json()["choices"][0] == {
        "text": "upon a",
        "index": 0,
        "logprobs": None,
        "finish_reason": "length",
    }


async def test_list_and_retrieve_models() -> None:
    async with app_client() as (client, _):
        listed = await client.get("/v1/models")
        one = await client.get("/v1/models/fake-model")
        other = await client.get("/v1/models/gpt-4")
    assert listed.json()["object"] == "list"
    (model,) = listed.json()["data"]
    assert model["id"] == "fake-model"
    assert model["object"] == "model"
    assert isinstance(model["created"], int)
    assert one.json() == model
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "model_not_found"


async def test_health_reports_slots_queue_and_offload_while_busy() -> None:
    engine = FakeEngine(reply=lambda p: "a b c d e f g h", token_delay_s=0.05, n_slots=2)
    async with app_client(engine) as (client, _):
        idle = (await client.get("/health")).json()
        body = {"messages": [{"role": "user", "content": "hi"}]}
        running = [
            asyncio.create_task(client.post("/v1/chat/completions", json=body)) for _ in range(3)
        ]
        await eventually(lambda: engine.stats().queue_length == 1)
        busy = await client.get("/health")
        await asyncio.gather(*running)
    assert idle["status"] == "ok"
    assert idle["slots_busy"] == 0
    assert idle["slots_total"] == 2
    assert idle["offload"]["backend"] == "cpu"
    assert busy.status_code == 200
    assert busy.json()["slots_busy"] == 2
    assert busy.json()["queue_length"] == 1
    assert busy.json()["model"] == "fake-model"


async def test_speculative_false_reaches_the_engine_request() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        for body in ({"speculative": False}, {}, {"speculative": True}):
            response = await client.post("/v1/completions", json={"prompt": "Once", **body})
            assert response.status_code == 200
        chat = {"messages": [{"role": "user", "content": "hi"}], "speculative": False}
        assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
        wrong = await client.post("/v1/completions", json={"prompt": "a", "speculative": "no"})
    assert [r.speculative for r in engine.submitted] == [False, True, True, False]
    assert wrong.status_code == 400
