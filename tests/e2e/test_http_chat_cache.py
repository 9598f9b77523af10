"""Real model, real uvicorn: chat users keep their KV cache across turns, Stop included.

More chats than slots (6 on 4): every turn's ``prompt_tokens_details.cached_tokens`` must
cover the previous turn's whole history, which takes the host-RAM prompt cache whenever a
chat's slot went to another chat in between (``/metrics`` counts those restores). A stream
cut after a few tokens (the user pressed Stop) keeps its cells, so the next turn reads less
than its history again. A 30-turn chat in a 256-token context keeps working by dropping its
oldest turns, and says so in ``X-Context-Dropped-Messages``; ``--context-overflow error``
answers 400 instead. Replies are short and greedy so the module stays quick on 2 cores.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, real_model_env, running_server
from tests.support.sse_client import EventSourceParser, SSEEvent

CTX = 256
SYSTEM = "You are a friendly assistant. Answer briefly."
# Short on purpose: a new chat that shares at least half of a free slot's cells (a long
# system prompt) takes that slot and the old chat's turns are dropped, not saved to host
# RAM (the KV manager saves only when it keeps less than half), so its next turn would
# prefill those turns again.
RETOKENIZATION_SLACK = 4
"""Tokens at the end of a reply that its text may tokenize to differently in the next turn."""

CHATS = [
    ["What is the capital of France?", "What river runs through it?", "Name a museum there."],
    ["Name three fruits.", "Which one is red?", "How do you eat it?"],
    ["What colour is the sky?", "Why is that?", "And at sunset?"],
    ["Say hello in Spanish.", "And in French?", "And in German?"],
    ["What is 2 + 2?", "Multiply that by three.", "Is the result even?"],
    ["What do bees make?", "Where do they live?", "Do they sleep?"],
]
DROPPED = "X-Context-Dropped-Messages"


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[ServerProcess]:
    env = real_model_env(model_path, parallel="4", ctx_size=str(CTX))
    with running_server(env) as process:
        yield process


def chat_body(messages: list[dict[str, str]], max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"messages": messages, "temperature": 0.0, "max_tokens": max_tokens, **extra}


async def chat_turn(
    client: httpx.AsyncClient, messages: list[dict[str, str]], max_tokens: int
) -> httpx.Response:
    return await client.post("/v1/chat/completions", json=chat_body(messages, max_tokens))


async def prompt_length(client: httpx.AsyncClient, messages: list[dict[str, str]]) -> int:
    """Tokens of the chat prompt the server renders for ``messages``."""
    response = await client.post("/tokenize", json={"messages": messages})
    assert response.status_code == 200, response.text
    count: int = response.json()["count"]
    return count


async def wait_idle(client: httpx.AsyncClient) -> None:
    """Wait until no request runs (a dropped stream is noticed and ended)."""
    state: dict[str, Any] = {}
    for _ in range(300):
        state = (await client.get("/health", timeout=5.0)).json()
        if state["slots_busy"] == 0 and state["requests_active"] == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the server did not go idle: {state}")


def metric(text: str, name: str) -> float:
    """One sample's value from Prometheus text, by its exact name (no labels)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


async def run_chat(client: httpx.AsyncClient, questions: list[str]) -> list[dict[str, Any]]:
    """A chat client: the whole history sent every turn; each turn's usage."""
    messages = [{"role": "system", "content": SYSTEM}]
    usages = []
    for question in questions:
        messages.append({"role": "user", "content": question})
        response = await chat_turn(client, messages, 12)
        assert response.status_code == 200, response.text
        body = response.json()
        messages.append({"role": "assistant", "content": body["choices"][0]["message"]["content"]})
        usages.append(body["usage"])
    return usages


async def test_six_chats_on_four_slots_each_turn_reuses_the_whole_previous_history(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:
        chats = await asyncio.gather(*(run_chat(client, questions) for questions in CHATS))
        metrics = (await client.get("/metrics")).text
    for usages in chats:
        assert usages[0]["prompt_tokens_details"]["cached_tokens"] <= usages[0]["prompt_tokens"]
        for before, usage in itertools.pairwise(usages):
            history = before["prompt_tokens"] + before["completion_tokens"]
            cached = usage["prompt_tokens_details"]["cached_tokens"]
            assert history - RETOKENIZATION_SLACK <= cached < usage["prompt_tokens"], chats
    # Six chats on four slots: some turns found their history in host RAM, not in a slot.
    hits = metric(metrics, "cria_prompt_cache_ram_hits_total")
    assert hits >= 1
    assert metric(metrics, "cria_prompt_cache_ram_saves_total") >= hits
    assert metric(metrics, "cria_prompt_cache_ram_restored_tokens_total") > 0
    assert metric(metrics, "cria_prompt_cache_ram_restored_bytes_total") > 0
    assert metric(metrics, "cria_prompt_cache_ram_entries") >= 1


STORY = (
    "Write a long story about a dragon and a knight. The dragon lives in a cave by the sea, "
    "the knight comes from a small village in the hills, and they meet on a rainy morning."
)


async def test_next_turn_after_stop_reports_the_partial_reply_cached(
    server: ServerProcess,
) -> None:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": STORY}]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:
        first_prompt = await prompt_length(client, messages)
        pieces: list[str] = []
        # Even if the whole reply is generated before the server sees the stream closed,
        # the next prompt still reuses more than half of that slot's cells.
        body = chat_body(messages, first_prompt // 2, stream=True)
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            parser = EventSourceParser()
            texts = response.aiter_text()  # referenced: a dropped iterator closes at GC
            while len(pieces) < 8:
                for event in parser.feed(await anext(texts)):
                    pieces.append(event.json()["choices"][0]["delta"].get("content", ""))
        # The stream is closed: the user pressed Stop after a few tokens.
        partial = "".join(pieces)
        assert partial.strip()
        await wait_idle(client)
        messages += [
            {"role": "assistant", "content": partial},
            {"role": "user", "content": "Go on."},
        ]
        body = chat_body(messages, 8, stream=True, stream_options={"include_usage": True})
        events: list[SSEEvent] = []
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            parser = EventSourceParser()
            async for text in response.aiter_text():
                events.extend(parser.feed(text))
    assert events[-1].data == "[DONE]"
    usage = events[-2].json()["usage"]
    assert usage["prompt_tokens"] > first_prompt + len(pieces) // 2
    # Beyond the first prompt: the tokens generated before Stop were kept in the cache.
    assert usage["prompt_tokens_details"]["cached_tokens"] > first_prompt


def long_chat_turn(i: int) -> str:
    return f"Tell me fact number {i + 1} about the ocean, in one sentence."


async def test_thirty_turn_chat_in_a_small_context_drops_its_oldest_turns(
    model_path: Path,
) -> None:
    # Once the history outgrows the context, every turn drops one more old turn and so
    # prefills its whole window again: a small window (llama.cpp's least) keeps that cheap.
    env = real_model_env(model_path, parallel="1", ctx_size=str(CTX))
    reply_cap = 8
    messages = [{"role": "system", "content": SYSTEM}]
    truncated = 0
    with running_server(env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:
            probe = await client.post("/tokenize", json={"content": SYSTEM})
            n_ctx = probe.json()["max_model_len"]
            assert n_ctx >= CTX
            for turn in range(30):
                messages.append({"role": "user", "content": long_chat_turn(turn)})
                full = await prompt_length(client, messages)
                response = await chat_turn(client, messages, reply_cap)
                assert response.status_code == 200, (turn, response.text)
                body = response.json()
                reply = body["choices"][0]["message"]["content"]
                assert reply, (turn, body)
                dropped = int(response.headers.get(DROPPED, "0"))
                if full + reply_cap <= n_ctx:
                    assert dropped == 0, (turn, full, body)
                    assert body["usage"]["prompt_tokens"] == full
                else:
                    truncated += 1
                    # Whole turns go, oldest first; the system message and question stay.
                    assert dropped > 0, (turn, full, body)
                    assert dropped % 2 == 0
                    assert dropped <= len(messages) - 2
                    assert body["usage"]["prompt_tokens"] + reply_cap <= n_ctx
                messages.append({"role": "assistant", "content": reply})
    assert truncated >= 20  # the history outgrew the context after a few turns
    # The same history on a server that refuses long chats instead.
    env["CRIA_CONTEXT_OVERFLOW"] = "error"
    messages.append({"role": "user", "content": long_chat_turn(30)})
    with running_server(env) as strict:
        async with httpx.AsyncClient(base_url=strict.base_url, timeout=300) as client:
            response = await chat_turn(client, messages, reply_cap)
    assert response.status_code == 400, response.text
    assert DROPPED not in response.headers
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "context_length_exceeded"
    assert str(n_ctx) in error["message"]
