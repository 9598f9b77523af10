"""The interop routes (Ollama, TGI, tokenize, embeddings) over the whole app with the FakeEngine:
shapes, each family's error body, and the shared auth, body limit, queue and OpenAPI."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import Any

import pytest

from tests.support.api import app_client, call_then_disconnect, eventually
from tests.support.fake_engine import FailingMidStream, FakeEngine, RecordingEngine

REPLY = "Paris is the capital of France."
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Capital of France?"}]}

KV_FULL = "llama_decode failed (KV cache full)"


def fake(**kwargs: Any) -> FakeEngine:
    return FakeEngine(reply=lambda prompt: REPLY, **kwargs)


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


async def test_ollama_chat_streams_ndjson_and_ends_with_stats() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        response = await client.post("/api/chat", json={**CHAT, "options": {"num_predict": 3}})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = ndjson(response.text)
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert "".join(line["message"]["content"] for line in lines) == "Paris is the"
    last = lines[-1]
    assert last["done_reason"] == "length"
    assert last["eval_count"] == 3
    assert last["prompt_eval_count"] > 0
    assert "total_duration" in last
    assert "done_reason" not in lines[0]
    assert engine.submitted[0].sampling.max_tokens == 3


async def test_ollama_chat_not_streamed_and_model_tag() -> None:
    async with app_client(fake()) as (client, _):
        response = await client.post(
            "/api/chat", json={**CHAT, "model": "fake-model:latest", "stream": False}
        )
    body = response.json()
    assert body["message"] == {"role": "assistant", "content": REPLY}
    assert body["done"] is True
    assert body["done_reason"] == "stop"


async def test_ollama_generate_applies_system_and_raw() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        templated = await client.post(
            "/api/generate",
            json={"model": "fake-model", "prompt": "Hi", "system": "Be brief.", "stream": False},
        )
        raw = await client.post(
            "/api/generate",
            json={"model": "fake-model", "prompt": "Once upon", "raw": True, "stream": False},
        )
    assert templated.json()["response"] == REPLY
    first, second = (request.prompt for request in engine.submitted)
    assert str(first) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert second == "Once upon"
    assert raw.json()["done"] is True


async def test_ollama_empty_request_only_loads() -> None:
    engine = fake()
    async with app_client(engine) as (client, _):
        response = await client.post("/api/generate", json={"model": "fake-model"})
    assert response.json()["done_reason"] == "load"
    assert engine.submitted == []


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({**CHAT, "format": "yaml"}, 400, "format"),
        (
            {**CHAT, "format": {"type": "object", "if": {"required": ["a"]}}},
            400,
            "format",
        ),
        ({**CHAT, "tools": [{"type": "function"}]}, 400, "tools"),
        ({**CHAT, "options": {"temperature": "hot"}}, 400, "temperature"),
        ({"messages": []}, 400, "model"),
    ],
)
async def test_ollama_errors_use_ollamas_body(body: dict[str, Any], status: int, says: str) -> None:
    async with app_client(fake()) as (client, _):
        response = await client.post("/api/chat", json=body)
    assert response.status_code == status
    error = response.json()
    assert list(error) == ["error"]
    assert says in error["error"]


async def test_ollama_format_and_tgi_grammar_constrain_the_reply() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    engine = fake()
    async with app_client(engine) as (client, _):
        for body in ({**CHAT, "format": "json"}, {**CHAT, "format": schema}):
            assert (await client.post("/api/chat", json=body)).status_code == 200
        for value in (schema, json.dumps(schema)):
            grammar = {"type": "json", "value": value}
            response = await client.post(
                "/generate", json={"inputs": "hi", "parameters": {"grammar": grammar}}
            )
            assert response.status_code == 200
    json_mode, with_schema, tgi_dict, tgi_text = (r.sampling.grammar for r in engine.submitted)
    assert json_mode is not None
    assert json.loads(json_mode.json_rules[0].schema) == {"type": "object"}
    assert with_schema is not None
    assert json.loads(with_schema.json_rules[0].schema) == schema
    assert tgi_dict == tgi_text
    assert tgi_dict is not None
    assert tgi_dict.json_rules == with_schema.json_rules


async def test_ollama_names_any_model_unless_strict() -> None:
    async with app_client(fake()) as (client, _):
        lenient = await client.post("/api/chat", json={**CHAT, "model": "llama3", "stream": False})
    async with app_client(fake(), strict_model_names=True) as (client, _):
        strict = await client.post("/api/chat", json={**CHAT, "model": "llama3"})
        tagged = await client.post("/api/chat", json={**CHAT, "model": "fake-model:latest"})
    assert lenient.json()["model"] == "fake-model"
    assert strict.status_code == 404
    assert list(strict.json()) == ["error"]
    assert "llama3" in strict.json()["error"]
    assert tagged.status_code == 200


async def test_ollama_options_map_to_sampling() -> None:
    engine = fake()
    options = {
        "temperature": 0.2,
        "top_k": 5,
        "top_p": 0.5,
        "min_p": 0.1,
        "seed": 9,
        "stop": ["capital"],
        "repeat_penalty": 1.2,
        "repeat_last_n": 32,
        "num_ctx": 8192,
        "mirostat": 0,
    }
    async with app_client(engine) as (client, _):
        response = await client.post("/api/chat", json={**CHAT, "options": options})
    assert "".join(line["message"]["content"] for line in ndjson(response.text)) == "Paris is the"
    sampling = engine.submitted[0].sampling
    assert (sampling.temperature, sampling.top_k, sampling.top_p, sampling.min_p) == (
        0.2,
        5,
        0.5,
        0.1,
    )
    assert (sampling.seed, sampling.stop, sampling.repeat_penalty) == (9, ("capital",), 1.2)
    assert sampling.penalty_last_n == 32


async def test_ollama_model_routes() -> None:
    async with app_client(fake()) as (client, _):
        tags = (await client.get("/api/tags")).json()
        ps = (await client.get("/api/ps")).json()
        show = (await client.post("/api/show", json={"model": "fake-model"})).json()
        version = (await client.get("/api/version")).json()
    (model,) = tags["models"]
    assert model["name"] == model["model"] == "fake-model:latest"
    assert model["details"]["quantization_level"] == "Q4_1"
    assert model["details"]["parameter_size"] == "134.52M"
    assert len(model["digest"]) == 64
    assert ps["models"][0]["size_vram"] == 0
    assert show["capabilities"] == ["completion"]
    assert "<|im_start|>" in show["template"]
    assert show["model_info"]["general.architecture"] == "llama"
    assert version["version"]


async def test_tgi_generate_with_details_and_compat_route() -> None:
    engine = fake()
    body = {"inputs": "The capital of France is", "parameters": {"max_new_tokens": 3}}
    async with app_client(engine) as (client, _):
        plain = await client.post("/generate", json=body)
        detailed = await client.post(
            "/generate", json={**body, "parameters": {"max_new_tokens": 3, "details": True}}
        )
        compat = await client.post("/", json=body)
    assert plain.json() == {"generated_text": "Paris is the", "details": None}
    details = detailed.json()["details"]
    assert details["finish_reason"] == "length"
    assert details["generated_tokens"] == 3
    assert [t["text"] for t in details["tokens"]] == ["Paris", " is", " the"]
    assert compat.json() == [plain.json()]
    assert engine.submitted[0].prompt == "The capital of France is"  # no chat template
    assert engine.submitted[0].sampling.temperature == 0.0  # TGI: greedy unless sampling asked


async def test_tgi_stream_events_end_with_text_and_details() -> None:
    body = {"inputs": "Capital?", "parameters": {"max_new_tokens": 3}, "stream": True}
    async with app_client(fake()) as (client, _):
        streamed = await client.post("/generate_stream", json=body)
        compat = await client.post("/", json=body)
    for response in (streamed, compat):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [
            json.loads(line.removeprefix("data:"))
            for line in response.text.splitlines()
            if line.startswith("data:")
        ]
        assert [e["index"] for e in events] == [0, 1, 2]
        assert [e["token"]["text"] for e in events] == ["Paris", " is", " the"]
        assert [e["generated_text"] for e in events] == [None, None, "Paris is the"]
        assert events[-1]["details"]["finish_reason"] == "length"
        assert "[DONE]" not in response.text


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        ({"inputs": ""}, 400, "validation"),
        (
            {"inputs": "hi", "parameters": {"grammar": {"type": "regex", "value": "a+"}}},
            400,
            "validation",
        ),
        ({"inputs": "hi", "parameters": {"top_n_tokens": 5}}, 400, "validation"),
        ({"inputs": "hi", "parameters": {"max_new_tokens": 0}}, 400, "validation"),
    ],
)
async def test_tgi_errors_use_tgis_body(body: dict[str, Any], status: int, error_type: str) -> None:
    async with app_client(fake()) as (client, _):
        response = await client.post("/generate", json=body)
    assert response.status_code == status
    error = response.json()
    assert set(error) == {"error", "error_type"}
    assert error["error_type"] == error_type


async def test_tgi_overloaded_is_429_with_its_error_type() -> None:
    engine = fake(n_slots=1, max_queue=0, token_delay_s=0.05)
    async with app_client(engine) as (client, _):
        task = asyncio.ensure_future(client.post("/generate", json={"inputs": "a"}))
        for _ in range(100):
            if engine.submitted:
                break
            await asyncio.sleep(0.01)
        second = await client.post("/generate", json={"inputs": "b"})
        await task
    assert second.status_code == 429
    assert second.json()["error_type"] == "overloaded"


async def test_tgi_info() -> None:
    async with app_client(fake()) as (client, _):
        info = (await client.get("/info")).json()
    assert info["model_id"] == "fake-model"
    assert info["max_total_tokens"] == 256


async def test_tokenize_pieces_and_detokenize() -> None:
    async with app_client(fake()) as (client, _):
        plain = (await client.post("/tokenize", json={"content": "é!"})).json()
        pieces = (
            await client.post("/tokenize", json={"content": "é!", "with_pieces": True})
        ).json()
        back = (await client.post("/detokenize", json={"tokens": plain["tokens"]})).json()
        bad = await client.post("/detokenize", json={"tokens": [10**9]})
        both = await client.post("/tokenize", json={"content": "a", "messages": CHAT["messages"]})
        chat = (await client.post("/tokenize", json={"messages": CHAT["messages"]})).json()
    assert plain == {"tokens": [0xC3, 0xA9, 0x21], "count": 3, "max_model_len": 256}
    assert pieces["tokens"] == [
        {"id": 0xC3, "piece": [0xC3]},
        {"id": 0xA9, "piece": [0xA9]},
        {"id": 0x21, "piece": "!"},
    ]
    assert back == {"content": "é!"}
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "tokens"
    assert both.status_code == 400
    rendered = "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    assert chat["count"] == len(rendered.encode())


async def test_embeddings_float_base64_and_usage() -> None:
    engine = fake(embeddings=True)
    async with app_client(engine) as (client, _):
        floats = (
            await client.post("/v1/embeddings", json={"input": ["red apple", "green apple"]})
        ).json()
        encoded = (
            await client.post(
                "/v1/embeddings", json={"input": "red apple", "encoding_format": "base64"}
            )
        ).json()
    assert floats["object"] == "list"
    assert floats["model"] == "fake-model"
    assert [item["index"] for item in floats["data"]] == [0, 1]
    assert floats["usage"] == {"prompt_tokens": 20, "total_tokens": 20}
    vector = floats["data"][0]["embedding"]
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(vector)}f", raw)) == pytest.approx(vector)


async def test_ollama_embed_routes_match_the_openai_vectors() -> None:
    async with app_client(fake(embeddings=True)) as (client, _):
        openai = (await client.post("/v1/embeddings", json={"input": ["a b", "c"]})).json()
        embed = (
            await client.post("/api/embed", json={"model": "fake-model", "input": ["a b", "c"]})
        ).json()
        legacy = (
            await client.post("/api/embeddings", json={"model": "fake-model", "prompt": "a b"})
        ).json()
        off = await client.post("/api/embed", json={"model": "fake-model", "input": ""})
    assert embed["embeddings"] == [item["embedding"] for item in openai["data"]]
    assert embed["prompt_eval_count"] == openai["usage"]["prompt_tokens"]
    assert legacy["embedding"] == embed["embeddings"][0]
    assert off.status_code == 400
    assert list(off.json()) == ["error"]


@pytest.mark.parametrize(
    ("engine_embeddings", "body", "says"),
    [
        (False, {"input": "hi"}, "Embeddings are off"),
        (True, {"input": ""}, "empty"),
        (True, {"input": "x" * 300}, "context"),
        (True, {"input": []}, "input"),
        (True, {"input": "hi", "encoding_format": "int8"}, "encoding_format"),
    ],
)
async def test_embeddings_errors_are_400(
    engine_embeddings: bool, body: dict[str, Any], says: str
) -> None:
    engine = fake(embeddings=engine_embeddings)
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]


NEW_ROUTES = [
    ("POST", "/api/chat", CHAT),
    ("POST", "/api/generate", {"model": "fake-model", "prompt": "hi"}),
    ("POST", "/api/embed", {"model": "fake-model", "input": ["hi"]}),
    ("POST", "/api/embeddings", {"model": "fake-model", "prompt": "hi"}),
    ("GET", "/api/tags", None),
    ("POST", "/api/show", {"model": "fake-model"}),
    ("GET", "/api/ps", None),
    ("GET", "/api/version", None),
    ("POST", "/generate", {"inputs": "hi"}),
    ("POST", "/generate_stream", {"inputs": "hi"}),
    ("POST", "/", {"inputs": "hi"}),
    ("GET", "/info", None),
    ("POST", "/tokenize", {"content": "hi"}),
    ("POST", "/detokenize", {"tokens": [104]}),
    ("POST", "/v1/embeddings", {"input": "hi"}),
]


@pytest.mark.parametrize(("method", "path", "body"), NEW_ROUTES)
async def test_new_routes_need_the_key_and_are_documented(
    method: str, path: str, body: dict[str, Any] | None
) -> None:
    async with app_client(fake(embeddings=True), api_key=["k-1"]) as (client, _):
        denied = await client.request(method, path, json=body)
        allowed = await client.request(method, path, json=body, headers={"X-Api-Key": "k-1"})
        document = (await client.get("/openapi.json")).json()
    assert denied.status_code == 401
    assert "API key" in json.dumps(denied.json())
    assert allowed.status_code == 200
    operation = document["paths"][path][method.lower()]
    assert operation["summary"]
    if body is not None:
        assert "requestBody" in operation


@pytest.mark.parametrize("path", ["/api/chat", "/generate", "/v1/embeddings", "/tokenize"])
async def test_new_routes_cap_the_body(path: str) -> None:
    async with app_client(fake(embeddings=True), max_body_bytes=2048) as (client, _):
        response = await client.post(path, content=b"{" + b" " * 4096 + b"}")
    assert response.status_code == 413


async def test_errors_after_the_stream_started_end_it_in_each_familys_shape() -> None:
    async with app_client(FailingMidStream(error=KV_FULL)) as (
        client,
        _,
    ):
        ollama = await client.post("/api/chat", json=CHAT)
        tgi = await client.post("/generate_stream", json={"inputs": "hi"})
        whole = await client.post("/generate", json={"inputs": "hi"})
    lines = ndjson(ollama.text)
    assert lines[0]["message"]["content"] == "Partial"
    assert lines[-1] == {"error": "llama_decode failed (KV cache full)"}
    events = [json.loads(line[5:]) for line in tgi.text.splitlines() if line.startswith("data:")]
    assert events[-1] == {
        "error": "llama_decode failed (KV cache full)",
        "error_type": "generation",
    }
    assert whole.status_code == 500
    assert whole.json()["error_type"] == "generation"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", CHAT),
        ("/api/generate", {"model": "m", "prompt": "go", "stream": False}),
        ("/generate_stream", {"inputs": "go"}),
        ("/generate", {"inputs": "go"}),
    ],
)
async def test_a_client_that_leaves_aborts_its_request(path: str, body: dict[str, Any]) -> None:
    engine = RecordingEngine()
    async with app_client(engine) as (_, app):
        gone = asyncio.Event()
        call = asyncio.create_task(call_then_disconnect(app, path, body, gone))
        await eventually(lambda: engine._generated_total >= 5)
        gone.set()
        await call
        await eventually(lambda: engine.stats().slots_busy == 0, timeout_s=1.0)
    (request,) = engine.submitted
    assert engine.abort_calls == [request.request_id]
    assert engine._generated_total < 100
