"""The app in a real uvicorn process (FakeEngine): keep-alive pings, disconnects, logs.

These need real sockets: a client that goes away, a stream that waits in the queue.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.server import FAKE_ENGINE_ENV, FAKE_FACTORY, ServerProcess, running_server
from tests.support.sse_client import EventSourceParser, SSEEvent

KEY = "test-secret-key-4f9a"
AUTH = {"Authorization": f"Bearer {KEY}"}
WORDS = 400
LONG_REPLY = " ".join(f"w{i}" for i in range(WORDS))


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {
        FAKE_ENGINE_ENV: json.dumps({"reply": LONG_REPLY, "token_delay_s": 0.01, "n_slots": 1}),
        "CRIA_MODEL": "fake-model",
        "CRIA_API_KEY": KEY,
        "CRIA_KEEPALIVE_S": "0.05",
        "CRIA_MAX_BODY_BYTES": "4096",
    }
    with running_server(env, factory=FAKE_FACTORY, ready_timeout_s=60) as process:
        yield process


async def events_of(response: httpx.Response) -> AsyncIterator[SSEEvent]:
    parser = EventSourceParser()
    async for text in response.aiter_text():
        for event in parser.feed(text):
            yield event


async def health(client: httpx.AsyncClient) -> dict[str, int | str]:
    body: dict[str, int | str] = (await client.get("/health")).json()
    return body


async def wait_idle(client: httpx.AsyncClient, timeout_s: float = 5.0) -> dict[str, int | str]:
    for _ in range(int(timeout_s / 0.02)):
        state = await health(client)
        if state["slots_busy"] == 0 and state["requests_active"] == 0:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"the slot is still busy after {timeout_s} s: {state}")


def content_of(event: SSEEvent) -> str | None:
    if event.data == "[DONE]":
        return None
    content: str | None = event.json()["choices"][0]["delta"].get("content")
    return content


def chat(max_tokens: int | None = None, *, stream: bool = True) -> dict[str, object]:
    body: dict[str, object] = {"messages": [{"role": "user", "content": "go"}], "stream": stream}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


async def test_dropping_a_stream_frees_the_slot_and_the_next_request_starts(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=30) as client:
        await wait_idle(client)
        async with client.stream("POST", "/v1/chat/completions", json=chat(400)) as response:
            # Keep the iterator referenced: a dropped one is closed at GC, closing the socket.
            events = events_of(response)
            for _ in range(10):
                await anext(events)
            assert (await health(client))["slots_busy"] == 1
        # The connection is closed mid-stream: 390 tokens (about 4 s) were still to come.
        await wait_idle(client, timeout_s=1.0)
        async with client.stream("POST", "/v1/chat/completions", json=chat(3)) as response:
            contents = [content_of(event) async for event in events_of(response)]
        assert "".join(c for c in contents if c) == "w0 w1 w2"


async def test_dropping_a_non_streamed_request_frees_the_slot(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as client:
        await wait_idle(client)
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/chat/completions", json=chat(400, stream=False), timeout=0.3)
        await wait_idle(client, timeout_s=1.0)


async def test_keepalive_pings_while_queued(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=30) as client:
        await wait_idle(client)
        first = asyncio.create_task(client.post("/v1/chat/completions", json=chat(30)))
        for _ in range(100):
            if (await health(client))["slots_busy"] == 1:
                break
            await asyncio.sleep(0.01)
        async with client.stream("POST", "/v1/chat/completions", json=chat(2)) as response:
            events = [event async for event in events_of(response)]
        await first
    # Role chunk at once; then the request waited ~0.3 s for the one slot, with pings.
    assert events[0].json()["choices"][0]["delta"]["role"] == "assistant"
    first_content = next(e for e in events if content_of(e))
    assert first_content.comments, "no keep-alive comment while the request was queued"
    assert all(comment.startswith("ping") for comment in first_content.comments)
    assert events[-1].data == "[DONE]"


async def test_chunked_oversized_body_is_413_over_real_http(server: ServerProcess) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(8):
            yield b"y" * 1024
        yield b'"}]}'

    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as client:
        response = await client.post("/v1/chat/completions", content=body())
        after = await client.get("/health")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert after.status_code == 200


async def test_declared_oversized_body_is_413_and_the_connection_recovers(
    server: ServerProcess,
) -> None:
    big = {"messages": [{"role": "user", "content": "z" * 8000}]}
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=30) as client:
        response = await client.post("/v1/chat/completions", json=big)
        after = await client.post("/v1/chat/completions", json=chat(2, stream=False))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert after.status_code == 200


async def test_one_log_line_per_request_and_no_key_in_logs(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        await wait_idle(client)
        ok = await client.post("/v1/chat/completions", json=chat(5, stream=False), headers=AUTH)
        wrong = await client.get("/v1/models", headers={"X-Api-Key": KEY + "-wrong"})
    assert ok.status_code == 200
    assert wrong.status_code == 401
    await asyncio.sleep(0.2)
    log = server.log()
    assert KEY not in log
    request_id = ok.headers["x-request-id"]
    (line,) = [line for line in log.splitlines() if f"request_id={request_id}" in line]
    assert "route=/{api_version}/chat/completions" in line
    assert "status=200" in line
    assert "completion_tokens=5" in line
    assert re.search(r"prompt_tokens=[1-9]", line)
    assert re.search(r"duration_ms=[0-9.]+", line)
    assert re.search(r"tokens_per_s=[0-9.]+", line)
    rejected = [
        line for line in log.splitlines() if f"request_id={wrong.headers['x-request-id']}" in line
    ]
    assert len(rejected) == 1
    assert "status=401" in rejected[0]
