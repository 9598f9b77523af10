"""The engine in its own process (the default) on the real model: crash isolation and drain.

A worker killed with SIGKILL mid-stream ends that stream with the ``engine_crashed`` error
event and ``[DONE]``; /health says "restarting", then "ok", and the next request is answered.
Repeated crashes leave the engine "failed" with the reason in /health and /metrics, while
/health, /metrics and the web page still answer. SIGTERM drains: the running stream
finishes, then the worker and the server exit.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, engine_processes, real_model_env, running_server
from tests.support.sse_client import EventSourceParser, SSEEvent

NO_END = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end tokens: never stop early


def chat(max_tokens: int, *, stream: bool = True) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "Count from 1 to 5000."}],
        "stream": stream,
        "max_tokens": max_tokens,
        "logit_bias": NO_END,
    }


@pytest.fixture
def server(model_path: Path) -> Iterator[ServerProcess]:
    env = real_model_env(model_path, parallel="2", ctx_size="1024")
    with running_server(env, cli=True) as running:
        yield running


def engine_pid(server: ServerProcess) -> int:
    """The one engine worker process of this single-model server."""
    (pid,) = engine_processes(server)
    return pid


def wait_for_health(server: ServerProcess, status: str, within: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        body: dict[str, Any] = httpx.get(f"{server.base_url}/health", timeout=10).json()
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def stream_and_kill(server: ServerProcess) -> list[SSEEvent]:
    """Stream a long reply and SIGKILL the engine process after its first tokens."""
    events: list[SSEEvent] = []
    parser = EventSourceParser()
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=chat(900), timeout=120
    ) as response:
        assert response.status_code == 200
        killed = False
        for text in response.iter_text():
            events.extend(parser.feed(text))
            if len(events) >= 3 and not killed:
                os.kill(engine_pid(server), signal.SIGKILL)
                killed = True
    return events


def test_a_killed_engine_ends_the_stream_and_restarts(server: ServerProcess) -> None:
    events = stream_and_kill(server)
    assert events[-1].data == "[DONE]"
    error = events[-2].json()["error"]
    assert error["code"] == "engine_crashed"
    assert "SIGKILL" in error["message"]
    restarting = httpx.get(f"{server.base_url}/health", timeout=10)
    assert restarting.status_code == 503
    assert restarting.json()["status"] in ("restarting", "ok")  # "ok" only on a fast host
    refused = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat(4, stream=False))
    if refused.status_code == 503:  # while restarting: a clear 503 with Retry-After
        assert int(refused.headers["retry-after"]) > 0
    health = wait_for_health(server, "ok")
    assert health["restarts"] == 1
    answer = httpx.post(
        f"{server.base_url}/v1/chat/completions", json=chat(8, stream=False), timeout=60
    )
    assert answer.status_code == 200
    assert answer.json()["usage"]["completion_tokens"] == 8


def test_repeated_crashes_leave_the_engine_failed_and_the_server_up(
    server: ServerProcess,
) -> None:
    for _ in range(3):  # CrashPolicy's default: 3 crashes within 60 s
        wait_for_health(server, "ok")
        os.kill(engine_pid(server), signal.SIGKILL)
        time.sleep(0.3)
    health = wait_for_health(server, "failed", within=60)
    assert "crashed 3 times" in health["reason"]
    assert "SIGKILL" in health["reason"]
    assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 503
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    assert 'cria_engine_state{state="failed"} 1.0' in metrics
    assert "crashed 3 times" in metrics
    # The model's own state says so too: /health models[], /metrics per model, /v1/models.
    (model,) = health["models"]
    assert model["state"] == "failed"
    assert model["restarts"] >= 2
    assert "crashed 3 times" in model["last_error"]
    model_id = model["id"]
    assert f'cria_model_state{{model="{model_id}",state="failed"}} 1.0' in metrics
    listed = httpx.get(f"{server.base_url}/v1/models", timeout=10).json()["data"]
    assert [m["state"] for m in listed if m["id"] == model_id] == ["failed"]
    page = httpx.get(f"{server.base_url}/", timeout=10)
    assert page.status_code == 200
    refused = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat(4, stream=False))
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "engine_dead"


def test_sigterm_drains_the_worker_then_both_exit(server: ServerProcess) -> None:
    worker = engine_pid(server)
    parser = EventSourceParser()
    events: list[SSEEvent] = []
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=chat(24), timeout=120
    ) as response:
        for text in response.iter_text():
            if not events:
                server.process.send_signal(signal.SIGTERM)
            events.extend(parser.feed(text))
    assert events[-1].data == "[DONE]"
    assert events[-2].json()["choices"][0]["finish_reason"] == "length"
    assert server.process.wait(timeout=60) == 0
    assert (
        not Path(f"/proc/{worker}").exists()
        or b"zombie" in Path(f"/proc/{worker}/status").read_bytes().lower()
    )
    assert "model freed" in server.log()
