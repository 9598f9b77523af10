"""Graceful drain: SIGTERM to ``cria serve`` with 8 live streams on the real model.

Short replies finish normally; long ones are ended at ``--shutdown-timeout`` with the
"server shutting down" error event, then ``[DONE]`` (CRIA's raw-text stream too). While the
drain runs, new requests get 503 with Retry-After and /health says "draining"; the model is
freed and the process exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, real_model_env, running_server
from tests.support.sse_client import EventSourceParser, SSEEvent

SHORT, LONG = 8, 900  # max_tokens: done within the drain / far longer than it
NO_END = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end-of-text/turn tokens: never stop early
PROMPT = "Count from 1 to 5000, one number per line."


def chat(max_tokens: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "max_tokens": max_tokens,
        "logit_bias": NO_END,
    }


async def tokens_per_s(server: ServerProcess) -> float:
    """One stream's token rate while 8 stream at once (the drain test's load)."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:

        async def one() -> float:
            started, last, n = 0.0, 0.0, 0
            parser = EventSourceParser()
            async with client.stream("POST", "/v1/chat/completions", json=chat(48)) as r:
                async for text in r.aiter_text():
                    for _ in parser.feed(text):
                        last = time.perf_counter()
                        started = started or last
                        n += 1
            return (n - 1) / max(last - started, 1e-6)

        rates = await asyncio.gather(*(one() for _ in range(8)))
    return min(rates)


@pytest.fixture
def server(model_path: Path) -> Iterator[tuple[ServerProcess, float]]:
    """The drain timeout sized from this host's measured speed: the short replies finish
    well within it, the long ones cannot (a fast host would finish 900 tokens within a
    fixed 4 s and the test could not tell a drain from completion)."""
    env = real_model_env(model_path, parallel="8", ctx_size="1024")
    with running_server(env) as probe:
        rate = asyncio.run(tokens_per_s(probe))
    timeout_s = min(max((SHORT * LONG) ** 0.5 / rate, 2.0), 8.0)
    if LONG / rate < 1.5 * timeout_s:
        pytest.skip(f"{rate:.0f} tokens/s per stream: {LONG} tokens end within any drain here")
    env |= {"CRIA_SHUTDOWN_TIMEOUT": f"{timeout_s:.2f}", "CRIA_CRIA_MAX_TOKENS": str(LONG)}
    with running_server(env, cli=True) as running:
        yield running, timeout_s


async def read_stream(
    client: httpx.AsyncClient, body: bytes | dict[str, Any], started: asyncio.Event
) -> list[SSEEvent]:
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    events: list[SSEEvent] = []
    parser = EventSourceParser()
    async with client.stream("POST", "/v1/chat/completions", **kwargs) as response:
        assert response.status_code == 200
        async for text in response.aiter_text():
            events.extend(parser.feed(text))
            if len(events) >= 2:
                started.set()
    return events


def ending(events: list[SSEEvent]) -> str:
    """'finished' (finish_reason, then [DONE]) or 'shut down' (error event, then [DONE])."""
    assert events[-1].data == "[DONE]", [e.data for e in events[-3:]]
    last = events[-2].data
    if last.startswith('{"error"'):
        error = events[-2].json()["error"]
        assert error["code"] == "server_shutting_down"
        assert "server shutting down" in error["message"]
        return "shut down"
    assert events[-2].json()["choices"][0]["finish_reason"] in ("stop", "length")
    return "finished"


async def drain_with_streams(server: ServerProcess) -> dict[str, Any]:
    bodies: list[bytes | dict[str, Any]] = [chat(SHORT)] * 3 + [chat(LONG)] * 4
    bodies.append(b'{"prompt": "' + PROMPT.encode() + b'"}')  # CRIA's contract, may be long
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120, limits=limits) as client:
        started = [asyncio.Event() for _ in bodies]
        tasks = [
            asyncio.create_task(read_stream(client, body, event))
            for body, event in zip(bodies, started, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 120)
        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        # During the drain: still listening, but no new work, and health says why.
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as fresh:
            refused = await fresh.post("/v1/chat/completions", json=chat(SHORT))
            health = await fresh.get("/health")
        streams = await asyncio.gather(*tasks)
    return {"streams": streams, "refused": refused, "health": health}


def test_sigterm_drains_eight_live_streams_then_exits_0(
    server: tuple[ServerProcess, float],
) -> None:
    process, _ = server
    result = asyncio.run(drain_with_streams(process))
    refused, health = result["refused"], result["health"]
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_shutting_down"
    assert int(refused.headers["retry-after"]) > 0
    assert health.status_code == 503
    assert health.json()["status"] == "draining"
    endings = [ending(events) for events in result["streams"]]
    assert endings[:3] == ["finished"] * 3  # short replies finish within the drain
    assert endings[3:7] == ["shut down"] * 4  # long ones are ended at the timeout
    # CRIA's raw-text stream ends the same way (it may also have finished by itself).
    cria = result["streams"][7]
    assert all(not e.data.startswith("{") for e in cria[:-2])  # raw text before the end
    code = process.process.wait(timeout=60)
    log = process.log()
    assert code == 0, log[-3000:]
    assert f"ending {4 + (endings[7] == 'shut down')} running request(s)" in log
    assert "model freed" in log


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_with_nothing_running_exits_0_at_once(model_path: Path, sig: signal.Signals) -> None:
    with running_server(real_model_env(model_path, parallel="1"), cli=True) as running:
        running.process.send_signal(sig)
        code = running.process.wait(timeout=30)
        log = running.log()
    assert code == 0, log[-2000:]  # not -SIGTERM: the signal is handled, not re-raised
    assert "drained: no request is running" in log
    assert "model freed" in log
