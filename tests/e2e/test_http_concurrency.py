"""Real model, real uvicorn: 8 concurrent streams, a dropped stream, health while busy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, real_model_env, running_server
from tests.support.sse_client import EventSourceParser, SSEEvent

QUESTIONS = [
    "What is the capital of France?",
    "Name three fruits.",
    "What colour is the sky?",
    "Say hello in Spanish.",
    "What is 2 + 2?",
    "Name a large animal.",
    "What do bees make?",
    "What is water made of?",
]


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[ServerProcess]:
    with running_server(real_model_env(model_path)) as process:
        yield process


def greedy(question: str, max_tokens: int, *, stream: bool) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": question}],
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "stream": stream,
    }


async def stream_text(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events: list[SSEEvent] = []
        parser = EventSourceParser()
        async for text in response.aiter_text():
            events.extend(parser.feed(text))
    assert events[-1].data == "[DONE]"
    return "".join(event.json()["choices"][0]["delta"].get("content", "") for event in events[:-1])


async def health(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/health", timeout=5.0)
    body: dict[str, Any] = response.json()
    return body


async def test_eight_concurrent_streams_each_equal_their_solo_output(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:
        solo = []
        for question in QUESTIONS:
            response = await client.post(
                "/v1/chat/completions", json=greedy(question, 16, stream=False)
            )
            solo.append(response.json()["choices"][0]["message"]["content"])
        together = await asyncio.gather(
            *(stream_text(client, greedy(q, 16, stream=True)) for q in QUESTIONS)
        )
    assert all(solo)
    assert list(together) == solo


async def test_dropped_stream_frees_its_slot_and_the_next_request_starts(
    server: ServerProcess,
) -> None:
    # ignore_eos and 900 tokens: the reply cannot end early on its own, so a freed slot
    # before it could have finished can only be the abort.
    body = greedy("Write a very long story about a dragon and a knight.", 900, stream=True)
    body["ignore_eos"] = True
    async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            # Keep the iterator referenced: a dropped one is closed at GC, closing the socket.
            parser = EventSourceParser()
            texts = response.aiter_text()
            seen = 0
            first = None
            while seen < 20:
                seen += len(parser.feed(await anext(texts)))
                first = first or time.perf_counter()
            per_token = (time.perf_counter() - first) / max(seen - 1, 1)
            during = await health(client)
        dropped = time.perf_counter()
        # Dropped after ~20 of 900 tokens: finishing would take ~880 more token times.
        assert during["slots_busy"] == 1
        state = during
        for _ in range(400):
            state = await health(client)
            if state["slots_busy"] == 0 and state["requests_active"] == 0:
                break
            await asyncio.sleep(0.05)
        freed_after = time.perf_counter() - dropped
        assert state["slots_busy"] == 0, state
        assert state["requests_active"] == 0, state
        assert freed_after < 0.5 * 880 * per_token, (freed_after, per_token)
        text = await stream_text(client, greedy("What is 2 + 2?", 8, stream=True))
        assert text


async def test_health_answers_while_every_slot_generates(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:
        streams = [
            asyncio.create_task(stream_text(client, greedy(q, 24, stream=True))) for q in QUESTIONS
        ]
        busy = 0
        for _ in range(200):
            state = await health(client)  # fails if /health takes more than 5 s
            busy = max(busy, state["slots_busy"])
            if busy == len(QUESTIONS):
                break
            await asyncio.sleep(0.02)
        await asyncio.gather(*streams)
    assert busy == len(QUESTIONS)
    assert state["slots_total"] == 8
    assert state["status"] == "ok"
