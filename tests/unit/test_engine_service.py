"""LlamaEngine over a fake backend: the engine thread, the asyncio bridge, errors and health."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from app.engine.service import LlamaEngine
from app.engine.types import (
    EngineConfig,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenEvent,
)
from app.errors import (
    ContextLengthExceeded,
    EngineDead,
    EngineNotReady,
    InvalidRequest,
    ModelLoadError,
    ModelNotFound,
    Overloaded,
)
from tests.support.fake_backend import FakeBackend, scripted_reply

GREEDY = SamplingParams(temperature=0.0, max_tokens=8)


def make_engine(backend: FakeBackend, **config: object) -> LlamaEngine:
    cfg = EngineConfig(model_path="/models/fake.gguf", **config)  # type: ignore[arg-type]
    return LlamaEngine(cfg, backend_factory=lambda _: backend)


async def collect(stream: AsyncIterator[TokenEvent]) -> list[TokenEvent]:
    return [event async for event in stream]


async def wait_until(predicate: object, within: float = 5.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def text_of(events: list[TokenEvent]) -> str:
    return "".join(e.text for e in events)


@pytest.fixture
async def engine() -> AsyncIterator[LlamaEngine]:
    eng = make_engine(FakeBackend(n_slots=2, n_ctx_slot=64), max_queue=4)
    await eng.start()
    yield eng
    await eng.stop()


async def test_lifecycle_health_info_and_token_count() -> None:
    backend = FakeBackend()
    eng = make_engine(backend)
    assert eng.health().state == "loading"
    assert eng.stats().slots_busy == 0
    with pytest.raises(EngineNotReady):
        eng.model_info()
    with pytest.raises(EngineNotReady):
        eng.submit(GenerationRequest("r", "hi"))
    await eng.start()
    assert eng.health().ready
    assert eng.model_info().n_slots == 4
    assert eng.count_tokens("héllo") == 7  # BOS + 6 bytes
    assert eng.count_tokens("héllo", add_special=False) == 6
    await eng.stop()
    assert eng.health().state == "stopped"
    assert backend.closed
    with pytest.raises(EngineDead):
        eng.submit(GenerationRequest("r", "hi"))


async def test_stream_yields_token_events_then_one_final_event(engine: LlamaEngine) -> None:
    events = await collect(engine.submit(GenerationRequest("r", "hello", GREEDY)))
    assert [e.is_final for e in events] == [False] * 8 + [True]
    assert all(e.request_id == "r" and e.token_id is not None for e in events[:-1])
    final = events[-1]
    assert final.finish_reason is FinishReason.LENGTH
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (6, 8)
    assert len(text_of(events)) == 8


async def test_concurrent_streams_match_each_stream_alone(engine: LlamaEngine) -> None:
    prompts = [f"prompt {i}" * (i + 1) for i in range(5)]
    alone = [
        text_of(await collect(engine.submit(GenerationRequest(f"a{i}", p, GREEDY))))
        for i, p in enumerate(prompts)
    ]
    together = await asyncio.gather(
        *(
            collect(engine.submit(GenerationRequest(f"t{i}", p, GREEDY)))
            for i, p in enumerate(prompts)
        )
    )
    assert [text_of(events) for events in together] == alone


async def test_request_errors_are_raised_before_any_work(engine: LlamaEngine) -> None:
    with pytest.raises(InvalidRequest):
        engine.submit(GenerationRequest("r", ""))
    with pytest.raises(InvalidRequest):
        engine.submit(GenerationRequest("r", ()))
    with pytest.raises(InvalidRequest):
        engine.submit(GenerationRequest("r", (1, 99999)))
    with pytest.raises(ContextLengthExceeded) as info:
        engine.submit(GenerationRequest("r", "x" * 63))  # BOS + 63 = 64 = n_ctx_slot
    assert (info.value.prompt_tokens, info.value.limit) == (64, 64)
    bad = [
        SamplingParams(temperature=-1.0),
        SamplingParams(top_p=1.5),
        SamplingParams(min_p=float("nan")),
        SamplingParams(top_k=-2),
        SamplingParams(max_tokens=0),
        SamplingParams(stop=("",)),
        SamplingParams(logit_bias={100000: 1.0}),
        SamplingParams(repeat_penalty=0.0),
    ]
    for params in bad:
        with pytest.raises(InvalidRequest):
            engine.submit(GenerationRequest("r", "hi", params))
    assert engine.stats().requests_total == 0


async def test_full_queue_raises_overloaded_and_queued_requests_still_finish() -> None:
    backend = FakeBackend(n_slots=1)
    eng = make_engine(backend, max_queue=2)
    await eng.start()
    backend.gate.clear()  # the engine thread blocks inside decode
    first = eng.submit(GenerationRequest("r0", "a", GREEDY))
    await wait_until(lambda: eng.stats().slots_busy == 1)
    queued = [eng.submit(GenerationRequest(f"r{i}", "b", GREEDY)) for i in (1, 2)]
    assert eng.stats().queue_length == 2
    with pytest.raises(Overloaded) as info:
        eng.submit(GenerationRequest("r3", "c", GREEDY))
    assert info.value.max_queue == 2
    backend.gate.set()
    results = await asyncio.gather(collect(first), *(collect(s) for s in queued))
    assert [r[-1].finish_reason for r in results] == [FinishReason.LENGTH] * 3
    assert results[1][-1].timings is not None
    assert results[1][-1].timings.queue_s > 0
    await eng.stop()


async def test_abort_queued_and_decoding_requests() -> None:
    engine = make_engine(FakeBackend(n_slots=2, decode_delay_s=0.003))
    await engine.start()
    long = SamplingParams(temperature=0.0, max_tokens=40)
    streams = {rid: engine.submit(GenerationRequest(rid, rid, long)) for rid in ("a", "b", "q")}
    tasks = {rid: asyncio.create_task(collect(s)) for rid, s in streams.items()}
    await wait_until(lambda: engine.stats().generated_tokens_total >= 4)
    engine.abort("q")  # waiting: both slots are busy
    engine.abort("b")  # decoding
    engine.abort("unknown")
    results = {rid: await task for rid, task in tasks.items()}
    assert results["q"][-1].finish_reason is FinishReason.CANCELLED
    assert len(results["q"]) == 1
    assert results["b"][-1].finish_reason is FinishReason.CANCELLED
    assert results["a"][-1].finish_reason is FinishReason.LENGTH
    assert len(results["a"]) == 41
    stats = engine.stats()
    assert (stats.slots_busy, stats.requests_active, stats.queue_length) == (0, 0, 0)
    await engine.stop()


async def test_abort_frees_the_slot_by_the_time_the_cancel_event_arrives() -> None:
    backend = FakeBackend(n_slots=1, decode_delay_s=0.005)
    eng = make_engine(backend)
    await eng.start()
    stream = eng.submit(GenerationRequest("r", "x", SamplingParams(temperature=0.0)))
    async for event in stream:
        if event.token_id is not None and event.token_id > 0:
            eng.abort("r")
        if event.is_final:
            assert event.finish_reason is FinishReason.CANCELLED
            stats = eng.stats()
            assert stats.slots_busy == 0
            assert stats.kv_cells_used > 0  # Stop keeps the cells for the next turn
    await eng.stop()


async def test_engine_thread_crash_fails_live_requests_and_marks_engine_dead() -> None:
    backend = FakeBackend(n_slots=1)
    eng = make_engine(backend)
    await eng.start()
    backend.gate.clear()
    running = eng.submit(GenerationRequest("run", "a", GREEDY))
    await wait_until(lambda: eng.stats().slots_busy == 1)
    waiting = eng.submit(GenerationRequest("wait", "b", GREEDY))
    backend.fail_with = RuntimeError("segfault-ish")
    backend.gate.set()
    for events in (await collect(running), await collect(waiting)):
        assert events[-1].finish_reason is FinishReason.ERROR
        assert events[-1].error is not None
        assert "segfault-ish" in events[-1].error
    health = eng.health()
    assert health.state == "dead"
    assert health.reason is not None
    assert "segfault-ish" in health.reason
    with pytest.raises(EngineDead):
        eng.submit(GenerationRequest("late", "c", GREEDY))
    stats = eng.stats()
    assert (stats.slots_busy, stats.requests_active) == (0, 0)
    await eng.stop()
    assert eng.health().state == "dead"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [(ModelNotFound("no such model"), ModelNotFound), (OSError("bad file"), ModelLoadError)],
)
async def test_load_failure_marks_dead_and_reraises_typed(
    raised: Exception, expected: type[Exception]
) -> None:
    def factory(_: EngineConfig) -> FakeBackend:
        raise raised

    eng = LlamaEngine(EngineConfig(model_path="/nope.gguf"), backend_factory=factory)
    with pytest.raises(expected):
        await eng.start()
    health = eng.health()
    assert health.state == "dead"
    assert health.reason
    with pytest.raises(EngineDead):
        eng.submit(GenerationRequest("r", "hi"))
    with pytest.raises(EngineDead):
        eng.model_info()


async def test_stop_cancels_running_requests() -> None:
    backend = FakeBackend(n_slots=1, decode_delay_s=0.002)
    eng = make_engine(backend)
    await eng.start()
    streams = [eng.submit(GenerationRequest(f"r{i}", "hi", SamplingParams())) for i in range(2)]
    await wait_until(lambda: eng.stats().generated_tokens_total > 0)
    await eng.stop()
    for stream in streams:
        events = await collect(stream)
        assert events[-1].finish_reason is FinishReason.CANCELLED


async def test_engine_thread_sleeps_when_idle(engine: LlamaEngine) -> None:
    await collect(engine.submit(GenerationRequest("r", "hi", GREEDY)))
    scheduler = engine._scheduler  # white-box: count scheduler steps while idle
    assert scheduler is not None
    steps = scheduler.steps
    await asyncio.sleep(0.1)
    assert scheduler.steps == steps


async def test_multibyte_text_streams_without_replacement_chars() -> None:
    backend = FakeBackend(reply=scripted_reply("日本語 🎉 ok".encode()))
    eng = make_engine(backend)
    await eng.start()
    events = await collect(eng.submit(GenerationRequest("r", "hi", SamplingParams(temperature=0))))
    assert text_of(events) == "日本語 🎉 ok"
    assert not any("\ufffd" in e.text for e in events)
    await eng.stop()


async def test_stop_during_load_closes_the_model_and_never_becomes_ready() -> None:
    backend = FakeBackend()
    loading = threading.Event()
    release = threading.Event()

    def slow_factory(_: EngineConfig) -> FakeBackend:
        loading.set()
        release.wait(5)
        return backend

    eng = LlamaEngine(EngineConfig(model_path="/m.gguf"), backend_factory=slow_factory)
    start = asyncio.create_task(eng.start())
    await asyncio.to_thread(loading.wait, 5)
    assert eng.health().state == "loading"
    await eng.stop()
    release.set()
    with pytest.raises(EngineDead):
        await start
    assert backend.closed
    assert eng.health().state == "stopped"
