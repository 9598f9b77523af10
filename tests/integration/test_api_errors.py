"""Every error answer: status, OpenAI body, headers; and the server keeps serving after them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.engine.types import GenerationRequest, TokenEvent
from tests.support.api import app_client, eventually
from tests.support.fake_engine import FailingMidStream, FakeEngine
from tests.support.sse_client import parse_sse

USER = [{"role": "user", "content": "Hello"}]

KV_FULL = "llama_decode failed (KV cache full)"


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["code"] == code
    return error


BAD_BODIES: list[tuple[str, bytes | dict[str, Any], str | None]] = [
    ("malformed json", b'{"messages": [', None),
    ("empty body", b"", None),
    ("json array", b"[1, 2]", None),
    ("deeply nested", b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", None),
    ("not utf-8", b'{"messages": "\xff\xfe"}', None),
    ("messages not a list", {"messages": "hi"}, "messages"),
    ("empty messages", {"messages": []}, "messages"),
    ("unknown role", {"messages": [{"role": "bot", "content": "x"}]}, "messages.0.role"),
    (
        "tool call arguments not JSON",
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}
                    ],
                },
                {"role": "user", "content": "x"},
            ]
        },
        "messages",
    ),
    (
        "tool_choice without tools",
        {"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"},
        "tool_choice",
    ),
    ("content wrong type", {"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    (
        "image part",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages.0.content.0.type",
    ),
    ("temperature as text", {"messages": USER, "temperature": "hot"}, "temperature"),
    ("temperature too high", {"messages": USER, "temperature": 5}, "temperature"),
    ("stream as text", {"messages": USER, "stream": "yes"}, "stream"),
    ("max_tokens as text", {"messages": USER, "max_tokens": "5"}, "max_tokens"),
    ("max_tokens fractional", {"messages": USER, "max_tokens": 1.5}, "max_tokens"),
    ("max_tokens negative", {"messages": USER, "max_tokens": -1}, "max_tokens"),
    ("max_tokens zero", {"messages": USER, "max_tokens": 0}, "max_tokens"),
    (
        "max_completion_tokens zero",
        {"messages": USER, "max_completion_tokens": 0},
        "max_completion_tokens",
    ),
    ("n=2", {"messages": USER, "n": 2}, "n"),
    ("too many stops", {"messages": USER, "stop": [f"s{i}" for i in range(65)]}, "stop"),
    ("logit_bias key", {"messages": USER, "logit_bias": {"abc": 1}}, "logit_bias"),
    ("logit_bias value", {"messages": USER, "logit_bias": {"1": 1000}}, "logit_bias"),
]


@pytest.mark.parametrize(
    ("body", "param"), [(b, p) for _, b, p in BAD_BODIES], ids=[name for name, _, _ in BAD_BODIES]
)
async def test_bad_chat_request_is_400_and_the_server_keeps_serving(
    body: bytes | dict[str, Any], param: str | None
) -> None:
    async with app_client() as (client, _):
        if isinstance(body, bytes):
            response = await client.post("/v1/chat/completions", content=body)
        else:
            response = await client.post("/v1/chat/completions", json=body)
        error = assert_error(response, 400)
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert "Traceback" not in response.text
        after = await client.post("/v1/chat/completions", json={"messages": USER})
        assert after.status_code == 200


async def test_n_message_says_why() -> None:
    async with app_client() as (client, _):
        n = await client.post("/v1/chat/completions", json={"messages": USER, "n": 3})
    assert "n=1" in n.json()["error"]["message"]


async def test_bad_requests_do_not_disturb_a_running_stream() -> None:
    engine = FakeEngine(reply=lambda p: "one two three four five six", token_delay_s=0.02)
    async with app_client(engine) as (client, _):
        body = {"messages": USER, "stream": True}
        stream = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        for _ in range(5):
            bad = await client.post("/v1/chat/completions", content=b"{nope")
            assert bad.status_code == 400
        response = await stream
    events = parse_sse(response.text)
    text = "".join(e.json()["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "one two three four five six"
    assert events[-1].data == "[DONE]"


async def test_context_length_exceeded_is_400_with_counts() -> None:
    engine = FakeEngine(n_ctx_slot=20)
    long = [{"role": "user", "content": "word " * 50}]
    async with app_client(engine) as (client, _):
        response = await client.post("/v1/chat/completions", json={"messages": long})
    error = assert_error(response, 400, "context_length_exceeded")
    assert "is 20 tokens" in error["message"]
    prompt_tokens = int(re.search(r"prompt has (\d+) tokens", error["message"]).group(1))
    assert prompt_tokens > 50
    assert error["param"] == "messages"


async def test_queue_full_is_429_with_retry_after() -> None:
    engine = FakeEngine(n_slots=1, max_queue=0, token_delay_s=0.05)
    async with app_client(engine) as (client, _):
        first = asyncio.create_task(client.post("/v1/chat/completions", json={"messages": USER}))
        await eventually(lambda: engine.stats().slots_busy == 1)
        response = await client.post("/v1/chat/completions", json={"messages": USER})
        assert (await first).status_code == 200
    error = assert_error(response, 429, "queue_full")
    assert int(response.headers["retry-after"]) >= 1
    assert error["type"] == "rate_limit_error"


async def test_retry_after_is_estimated_from_the_queue_and_mean_request_time() -> None:
    """Two slots, two waiting, 30 s per request: a retry waits for three to start, ~45 s."""
    engine = FakeEngine(n_slots=2, max_queue=2, token_delay_s=1.0)
    async with app_client(engine) as (client, app):
        app.state.http_metrics.generation_s.add(30.0)  # as if one 30 s generation had finished
        body = {"messages": USER}
        running = [asyncio.create_task(client.post("/v1/chat/completions", json=body))
                   for _ in range(4)]  # fmt: skip
        await eventually(lambda: engine.stats().queue_length == 2)
        response = await client.post("/v1/chat/completions", json=body)
        for task in running:
            task.cancel()
    error = assert_error(response, 429, "queue_full")
    assert response.headers["retry-after"] == "45"
    assert "45 s" in error["message"]


async def test_loading_is_503_for_health_and_routes() -> None:
    engine = FakeEngine(start_delay_s=30)
    async with app_client(engine, wait_ready=False) as (client, _):
        health = await client.get("/health")
        chat = await client.post("/v1/chat/completions", json={"messages": USER})
        models = await client.get("/v1/models")
        card = await client.get("/model-card")
    assert health.status_code == 503
    assert health.json()["status"] == "loading"
    assert_error(chat, 503, "model_loading")
    assert int(chat.headers["retry-after"]) > 0
    assert_error(models, 503, "model_loading")
    assert_error(card, 503, "model_loading")


async def test_dead_engine_is_503() -> None:
    engine = FakeEngine()
    async with app_client(engine) as (client, _):
        engine.state, engine.dead_reason = "dead", "engine thread crashed"
        health = await client.get("/health")
        chat = await client.post("/v1/chat/completions", json={"messages": USER})
    assert health.status_code == 503
    assert health.json()["status"] == "dead"
    assert health.json()["reason"] == "engine thread crashed"
    error = assert_error(chat, 503, "engine_dead")
    assert "engine thread crashed" in error["message"]


class ExplodingEngine(FakeEngine):
    def submit(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        raise RuntimeError("secret internal detail /home/user/.cache")


async def test_unexpected_error_is_500_without_internals() -> None:
    async with app_client(ExplodingEngine()) as (client, _):
        response = await client.post("/v1/chat/completions", json={"messages": USER})
        after = await client.get("/health")
    error = assert_error(response, 500, "internal_error")
    assert error["type"] == "server_error"
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    assert after.status_code == 200


async def test_error_after_stream_start_is_one_final_error_event() -> None:
    async with app_client(FailingMidStream(error=KV_FULL)) as (
        client,
        _,
    ):
        response = await client.post(
            "/v1/chat/completions", json={"messages": USER, "stream": True}
        )
        whole = await client.post("/v1/chat/completions", json={"messages": USER})
    assert response.status_code == 200
    events = parse_sse(response.text)
    assert events[0].json()["choices"][0]["delta"]["role"] == "assistant"
    assert events[1].json()["choices"][0]["delta"]["content"] == "Partial"
    last = events[-1].json()
    assert set(last) == {"error"}
    assert last["error"]["code"] == "generation_failed"
    assert "KV cache full" in last["error"]["message"]
    assert all(event.data != "[DONE]" for event in events)
    assert_error(whole, 500, "generation_failed")


async def test_body_over_the_limit_is_413_by_content_length() -> None:
    async with app_client(max_body_bytes=2048) as (client, _):
        big = {"messages": [{"role": "user", "content": "x" * 4000}]}
        response = await client.post("/v1/chat/completions", json=big)
        ok = await client.post("/v1/chat/completions", json={"messages": USER})
    assert_error(response, 413, "request_too_large")
    assert ok.status_code == 200


async def test_chunked_body_over_the_limit_is_413_while_reading() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    async with app_client(max_body_bytes=2048) as (client, _):
        response = await client.post("/v1/chat/completions", content=chunks())
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "request_too_large")


async def test_unknown_route_and_method_use_the_error_body() -> None:
    async with app_client() as (client, _):
        missing = await client.get("/v1/nothing")
        method = await client.get("/v1/completions")
    assert_error(missing, 404, "not_found")
    assert_error(method, 405, "method_not_allowed")
