"""Conversation affinity over HTTP: the key a request carries comes back as ``X-Session-Id``.

Clients send the key as the header, or as OpenAI's ``prompt_cache_key``/``user`` body fields;
a proxy in front of replicas hashes it (deploy/haproxy/haproxy.cfg). The engine's load is also
served under the vLLM names the Gateway API Inference Extension's endpoint picker reads.
"""

from __future__ import annotations

import asyncio

from tests.integration.test_api_metrics import samples
from tests.support.api import app_client, eventually
from tests.support.fake_engine import FakeEngine

USER = [{"role": "user", "content": "Hello"}]


async def test_header_key_is_echoed_on_answers_errors_and_streams() -> None:
    headers = {"X-Session-Id": "conv-42"}
    async with app_client() as (client, _):
        answer = await client.post("/v1/chat/completions", json={"messages": USER}, headers=headers)
        error = await client.post("/v1/chat/completions", json={"messages": []}, headers=headers)
        body = {"messages": USER, "stream": True}
        async with client.stream(
            "POST", "/v1/chat/completions", json=body, headers=headers
        ) as stream:
            streamed = stream.headers.get("x-session-id")
            await stream.aread()
        health = await client.get("/health", headers=headers)
    assert answer.status_code == 200
    assert answer.headers["x-session-id"] == "conv-42"
    assert error.status_code == 400
    assert error.headers["x-session-id"] == "conv-42"
    assert streamed == "conv-42"
    assert health.headers["x-session-id"] == "conv-42"


async def test_body_keys_are_echoed_and_the_header_wins() -> None:
    async with app_client() as (client, _):
        cache_key = await client.post(
            "/v1/chat/completions",
            json={"messages": USER, "prompt_cache_key": "pck-1", "user": "alice"},
        )
        user = await client.post("/v1/chat/completions", json={"messages": USER, "user": "alice"})
        completion = await client.post(
            "/v1/completions", json={"prompt": "Hi", "max_tokens": 2, "user": "bob"}
        )
        both = await client.post(
            "/v1/chat/completions",
            json={"messages": USER, "prompt_cache_key": "pck-1"},
            headers={"X-Session-Id": "from-header"},
        )
        none = await client.post("/v1/chat/completions", json={"messages": USER})
        unsafe = await client.post(
            "/v1/chat/completions", json={"messages": USER, "user": "two\nlines"}
        )
    assert [r.status_code for r in (cache_key, user, completion, both, none, unsafe)] == [200] * 6
    assert cache_key.headers["x-session-id"] == "pck-1"
    assert user.headers["x-session-id"] == "alice"
    assert completion.headers["x-session-id"] == "bob"
    assert both.headers["x-session-id"] == "from-header"
    assert "x-session-id" not in none.headers
    assert "x-session-id" not in unsafe.headers


async def test_browsers_may_send_and_read_the_key() -> None:
    origin = "http://localhost:3000"
    async with app_client() as (client, _):
        preflight = await client.options(
            "/v1/chat/completions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-session-id",
            },
        )
        answer = await client.post(
            "/v1/chat/completions",
            json={"messages": USER},
            headers={"Origin": origin, "X-Session-Id": "conv-7"},
        )
    assert preflight.status_code == 200
    assert "x-session-id" in preflight.headers["access-control-allow-headers"].lower()
    assert "x-session-id" in answer.headers["access-control-expose-headers"].lower()
    assert answer.headers["x-session-id"] == "conv-7"


async def test_queue_and_running_counts_under_the_endpoint_pickers_names() -> None:
    engine = FakeEngine(n_slots=1, max_queue=4, token_delay_s=0.05)
    async with app_client(engine) as (client, _):
        body = {"messages": USER, "max_tokens": 40}
        requests = [
            asyncio.create_task(client.post("/v1/chat/completions", json=body)) for _ in range(3)
        ]
        await eventually(lambda: engine.stats().requests_active == 3)
        busy = samples((await client.get("/metrics")).text)
        await asyncio.gather(*requests)
        idle = samples((await client.get("/metrics")).text)
    assert busy["vllm:num_requests_running"] == 1
    assert busy["vllm:num_requests_waiting"] == 2
    assert idle["vllm:num_requests_running"] == 0
    assert idle["vllm:num_requests_waiting"] == 0
    assert idle["vllm:kv_cache_usage_perc"] == 0  # the fake engine keeps no KV cells
    assert idle['vllm:cache_config_info{block_size="16",num_gpu_blocks="16"}'] == 1
