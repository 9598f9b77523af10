"""``WorkerEngine`` over a real engine worker process running the fake backend.

The dispatch of step messages, aborts, embeddings over the pipe, a worker killed with
SIGKILL (its streams end with ``EngineCrashed``, it restarts), repeated crashes (``failed``)
and stop. Worker processes are found as this process's children named ``cria-engine``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from app.engine.remote import WorkerEngine
from app.engine.restart import CrashPolicy
from app.engine.service import LlamaEngine
from app.engine.types import (
    EngineConfig,
    FinishReason,
    GenerationRequest,
    LoraAdapter,
    LoraScale,
    SamplingParams,
    TokenEvent,
)
from app.errors import (
    ContextLengthExceeded,
    EngineCrashed,
    EngineDead,
    EngineNotReady,
    InvalidRequest,
)
from tests.support.fake_worker import fake_vocabulary, slow_fake_backend

CONFIG = EngineConfig(model_path="/models/fake.gguf", n_slots=2, n_ctx_slot=64, embeddings=True)
GREEDY = SamplingParams(temperature=0.0, max_tokens=12)
MAX_CRASHES = 2


def make_worker() -> WorkerEngine:
    policy = CrashPolicy(max_crashes=MAX_CRASHES, window_s=60.0, first_delay_s=0.05)
    return WorkerEngine(
        CONFIG, backend_factory=slow_fake_backend, vocabulary=fake_vocabulary, policy=policy
    )


def request(rid: str, prompt: str = "hello", **sampling: object) -> GenerationRequest:
    params = SamplingParams(**{**GREEDY.__dict__, **sampling})  # type: ignore[arg-type]
    return GenerationRequest(rid, prompt, params)


async def events_of(stream: AsyncIterator[TokenEvent]) -> list[TokenEvent]:
    return [event async for event in stream]


def worker_pids() -> list[int]:
    return [p.pid for p in multiprocessing.active_children() if p.name == "cria-engine" and p.pid]


async def wait_for_state(engine: WorkerEngine, state: str, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while engine.health().state != state:
        assert loop.time() < deadline, f"still {engine.health()}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def worker() -> AsyncIterator[WorkerEngine]:
    engine = make_worker()
    await engine.start()
    yield engine
    await engine.stop()


async def test_streams_match_the_in_process_engine(worker: WorkerEngine) -> None:
    local = LlamaEngine(CONFIG, backend_factory=slow_fake_backend)
    await local.start()
    try:
        prompts = ["one", "two", "three", "four"]
        remote = await asyncio.gather(
            *(events_of(worker.submit(request(f"r{i}", p))) for i, p in enumerate(prompts))
        )
        here = await asyncio.gather(
            *(events_of(local.submit(request(f"l{i}", p))) for i, p in enumerate(prompts))
        )
    finally:
        await local.stop()
    for got, want in zip(remote, here, strict=True):
        assert [(e.text, e.token_id) for e in got] == [(e.text, e.token_id) for e in want]
        assert got[-1].finish_reason == want[-1].finish_reason
        assert got[-1].usage == want[-1].usage
    assert worker.stats().requests_active == 0


async def test_local_checks_raise_at_submit(worker: WorkerEngine) -> None:
    with pytest.raises(ContextLengthExceeded):
        worker.submit(request("long", "x" * 200))
    assert worker.count_tokens("abc", add_special=False) == 3
    assert worker.detokenize(worker.tokenize("hi")) == "hi"


async def test_closing_a_stream_aborts_it(worker: WorkerEngine) -> None:
    stream = worker.submit(request("a", max_tokens=500))
    first = await stream.__anext__()
    assert first.finish_reason is None
    await stream.aclose()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while worker.stats().requests_active or worker.stats().slots_busy:
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
    assert (await events_of(worker.submit(request("b"))))[-1].finish_reason is not None


async def test_embeddings_cross_the_pipe(worker: WorkerEngine) -> None:
    result = await worker.embed(["abc", "de"])
    assert len(result.vectors) == 2
    assert result.prompt_tokens > 0


async def test_a_killed_worker_ends_its_streams_and_restarts(worker: WorkerEngine) -> None:
    stream = worker.submit(request("doomed", max_tokens=500))
    await stream.__anext__()
    (pid,) = worker_pids()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(EngineCrashed, match="SIGKILL"):
        await events_of(stream)
    assert worker.health().state == "restarting"
    with pytest.raises(EngineNotReady):
        worker.submit(request("too-early"))
    await wait_for_state(worker, "ready")
    assert worker.health().restarts == 1
    events = await events_of(worker.submit(request("after")))
    assert events[-1].finish_reason is not None
    assert events[-1].error is None


async def test_repeated_crashes_mark_the_engine_failed(worker: WorkerEngine) -> None:
    for _ in range(MAX_CRASHES):
        await wait_for_state(worker, "ready")
        (pid,) = worker_pids()
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
    await wait_for_state(worker, "failed")
    reason = worker.health().reason or ""
    assert "crashed 2 times" in reason
    assert "SIGKILL" in reason
    with pytest.raises(EngineDead):
        worker.submit(request("no"))


async def test_stop_cancels_running_streams_and_ends_the_worker() -> None:
    engine = make_worker()
    await engine.start()
    stream = engine.submit(request("long", max_tokens=500))
    await stream.__anext__()
    await engine.stop()
    events = [event async for event in stream]
    assert events[-1].finish_reason is FinishReason.CANCELLED
    assert worker_pids() == []
    assert engine.health().state == "stopped"


def test_the_pipe_stays_blocking_under_uvloop() -> None:
    # uvloop's add_reader made the pipe non-blocking: a reply over the socket buffer (256
    # embeddings on the real model, ~1.3 MB) failed mid-read and was taken for the worker's
    # death (503, worker restarted). The server runs uvloop, so this test does too. (The
    # fake backend's replies are too small to overflow the buffer, and the request limits
    # refuse an oversized request before it is sent, so the test checks the pipe's mode;
    # tests/e2e/test_request_budget.py sends the 256 real embeddings.)
    import uvloop

    async def blocking_after_start() -> bool:
        engine = make_worker()
        await engine.start()
        try:
            conn = engine._conn  # the pipe to the worker
            assert conn is not None
            result = await engine.embed(["abc"] * 256)
            assert len(result.vectors) == 256
            return os.get_blocking(conn.fileno())
        finally:
            await engine.stop()

    assert uvloop.run(blocking_after_start())


async def test_lora_adapters_over_the_pipe() -> None:
    adapters = (LoraAdapter(0, "v1.2", "/a.gguf"), LoraAdapter(1, "v1.3", "/b.gguf", 0.5))
    engine = WorkerEngine(
        replace(CONFIG, lora=adapters),
        backend_factory=slow_fake_backend,
        vocabulary=fake_vocabulary,
    )
    await engine.start()
    try:
        assert await engine.lora_adapters() == adapters
        assert [a.scale for a in await engine.lora_adapters({0: 0.25})] == [0.25, 0.5]
        with pytest.raises(InvalidRequest, match="no LoRA adapter with id 3"):
            await engine.lora_adapters({3: 1.0})  # refused in the worker, raised here
        with pytest.raises(InvalidRequest, match="no LoRA adapter with id 7"):
            engine.submit(GenerationRequest("bad", "hi", GREEDY, lora=(LoraScale(7),)))
        base = await events_of(engine.submit(request("base")))
        tuned = await events_of(
            engine.submit(GenerationRequest("tuned", "hello", GREEDY, lora=(LoraScale(1),)))
        )
        assert tuned[-1].finish_reason is FinishReason.LENGTH
        assert [e.token_id for e in tuned] != [e.token_id for e in base]
    finally:
        await engine.stop()
