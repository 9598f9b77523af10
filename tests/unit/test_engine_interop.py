"""The real LlamaEngine over the fake backend: tokenize/detokenize/pieces, and embeddings on
their own worker thread (batched, never on the event loop or the engine thread)."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from app.engine.embeddings import EmbeddingService, normalize, pack
from app.engine.service import LlamaEngine
from app.engine.types import EngineConfig
from app.errors import ContextLengthExceeded, EngineError, InvalidRequest, Overloaded
from tests.support.fake_backend import BOS, EOG, FakeBackend, FakeEmbedder


def engine_over(backend: FakeBackend, **config: object) -> LlamaEngine:
    cfg = EngineConfig(model_path="fake.gguf", n_slots=2, n_ctx_slot=64, **config)  # type: ignore[arg-type]
    return LlamaEngine(cfg, backend_factory=lambda _: backend)


async def test_vocabulary_calls() -> None:
    backend = FakeBackend()
    engine = engine_over(backend)
    await engine.start()
    try:
        assert engine.tokenize("hé") == [104, 0xC3, 0xA9]
        assert engine.tokenize("h", add_special=True) == [BOS, 104]
        assert engine.tokenize("") == []
        assert engine.detokenize([BOS, 104, 0xC3, 0xA9, EOG]) == "<s>hé</s>"
        assert engine.token_pieces([0xC3, EOG]) == [b"\xc3", b"</s>"]
        with pytest.raises(InvalidRequest):
            engine.detokenize([1000])
        with pytest.raises(InvalidRequest):
            engine.token_pieces([-1])
    finally:
        await engine.stop()


async def test_embeddings_off_by_default_is_a_clear_error() -> None:
    engine = engine_over(FakeBackend())
    await engine.start()
    try:
        with pytest.raises(InvalidRequest, match="--embeddings"):
            await engine.embed(["hi"])
    finally:
        await engine.stop()


async def test_embeddings_run_batched_on_one_worker_thread() -> None:
    backend = FakeBackend()
    engine = engine_over(backend, embeddings=True)
    await engine.start()
    try:
        results = await asyncio.gather(
            engine.embed(["ab", "ba"]), engine.embed(["c"]), engine.embed(["x" * 63])
        )
        with pytest.raises(ContextLengthExceeded):
            await engine.embed(["x" * 64])
        with pytest.raises(InvalidRequest, match="empty"):
            await engine.embed(["ok", ""])
    finally:
        await engine.stop()
    embedder = backend.embedder
    assert embedder is not None
    assert embedder.threads == {"cria-embeddings"}  # not the loop's, not the engine's
    assert embedder.closed
    first, second, long = results
    assert first.prompt_tokens == 6  # BOS + 2 bytes, twice
    assert first.vectors[0] == first.vectors[1]  # same bytes, same histogram
    assert all(math.isclose(sum(x * x for x in v), 1.0) for v in first.vectors)
    assert len(second.vectors) == len(long.vectors) == 1
    # Every call fitted the context: the 64-token input (BOS + 63) went alone.
    assert all(sum(len(i) for i in call) <= 64 for call in embedder.calls)


def test_pack_respects_tokens_and_inputs() -> None:
    from app.engine.embeddings import _Job

    job = _Job([[1] * 30, [2] * 30, [3] * 10, [4] * 5, [5], [6]])
    batches = pack([(job, i) for i in range(6)], n_ctx=64, n_seq_max=3)
    assert [[i for _, i in batch] for batch in batches] == [[0, 1], [2, 3, 4], [5]]


def test_normalize() -> None:
    assert normalize([3.0, 4.0]) == [0.6, 0.8]
    assert normalize([0.0, 0.0]) == [0.0, 0.0]


def test_service_queue_bound_and_failures() -> None:
    embedder = FakeEmbedder(n_ctx=16, n_seq_max=4)
    gate = threading.Event()
    original = embedder.embed

    def slow(inputs: object) -> list[list[float]]:
        gate.wait(5)
        return original(inputs)  # type: ignore[arg-type]

    embedder.embed = slow  # type: ignore[method-assign]
    service = EmbeddingService(embedder, max_queue=1)
    try:
        running = service.submit([[1]])
        for _ in range(200):  # the worker takes the first job off the queue
            if service._jobs.empty():
                break
            threading.Event().wait(0.005)
        waiting = service.submit([[2]])
        with pytest.raises(Overloaded):
            service.submit([[3]])
        gate.set()
        assert running.result(5) == [[0.0, 1.0, 0, 0, 0, 0, 0, 0]]
        assert len(waiting.result(5)) == 1
        embedder.fail_with = RuntimeError("boom")
        with pytest.raises(EngineError, match="boom"):
            service.submit([[4]]).result(5)
    finally:
        gate.set()
        service.close()
    assert embedder.closed


def test_auto_pooling_follows_the_model() -> None:
    from app.engine.llama.embeddings import resolve_pooling

    assert resolve_pooling("auto", {"bert.pooling_type": "2"}, "bert") == "cls"
    assert resolve_pooling("auto", {"bert.pooling_type": "1"}, "bert") == "mean"
    assert resolve_pooling("auto", {}, "llama") == "last"  # a causal chat model
    assert resolve_pooling("mean", {"bert.pooling_type": "2"}, "bert") == "mean"
