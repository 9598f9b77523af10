"""Failures stay with one request; long prompts take only their share of a decode step."""

from __future__ import annotations

from collections.abc import Sequence

from app.engine.backend import BatchToken, DecodeError
from app.engine.types import FinishReason, SamplingParams
from tests.support.fake_backend import FakeBackend
from tests.unit.test_scheduler import Harness, prompt_of

POISON = 999  # a prompt token the fake "model" cannot decode


def params(max_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens)


def fail_on_poison(batch: Sequence[BatchToken]) -> None:
    if any(bt.token == POISON for bt in batch):
        raise DecodeError(-1, "poisoned batch")


def test_a_prefill_that_cannot_be_decoded_ends_only_its_request() -> None:
    backend = FakeBackend(n_slots=4, n_ctx_slot=128, n_batch=32)
    backend.on_decode = fail_on_poison
    h = Harness(backend)
    for rid in ("a", "b", "c"):
        h.submit(rid, prompt_of(5, ord(rid)), params(12))
    for _ in range(3):
        h.sched.step()  # the three are decoding now
    h.submit("bad", [*prompt_of(6), POISON, *prompt_of(3)], params(5))
    h.run()
    bad = h.final("bad")
    assert bad is not None
    assert bad.finish_reason is FinishReason.ERROR
    assert bad.error is not None
    assert "decode failed" in bad.error
    for rid in ("a", "b", "c"):
        final = h.final(rid)
        assert final is not None
        assert final.finish_reason is FinishReason.LENGTH
        assert final.usage is not None
        assert final.usage.completion_tokens == 12
    # Every stream kept its KV cells consistent with what the manager records.
    for slot in h.sched.kv.slots:
        assert backend.kv[slot.seq_id] == slot.tokens
    # The engine keeps serving.
    h.submit("after", prompt_of(4, 3), params(3))
    h.run()
    after = h.final("after")
    assert after is not None
    assert after.finish_reason is FinishReason.LENGTH


def test_outputs_are_the_same_with_and_without_a_failing_neighbour() -> None:
    texts = {}
    for poison in (False, True):
        backend = FakeBackend(n_slots=3, n_ctx_slot=128, n_batch=32)
        backend.on_decode = fail_on_poison
        h = Harness(backend)
        h.submit("a", prompt_of(5, 1), params(10))
        h.sched.step()
        if poison:
            h.submit("bad", [POISON] * 4, params(5))
        h.run()
        texts[poison] = h.text("a")
    assert texts[True] == texts[False]


def test_an_exception_while_sampling_ends_only_that_request() -> None:
    backend = FakeBackend(n_slots=2, n_ctx_slot=64)
    h = Harness(backend)
    h.submit("ok", prompt_of(4, 1), params(6))
    h.submit("boom", prompt_of(4, 2), params(6))
    h.sched.step()
    boom = next(s for s in backend.samplers if s.accepted and s.accepted[0] == prompt_of(4, 2)[0])

    def explode(_: int) -> int:
        raise ValueError("bad logits")

    boom.sample = explode  # type: ignore[method-assign]
    h.run()
    final = h.final("boom")
    assert final is not None
    assert final.finish_reason is FinishReason.ERROR
    ok = h.final("ok")
    assert ok is not None
    assert ok.finish_reason is FinishReason.LENGTH


def test_prompt_tokens_per_step_are_capped_while_streams_decode() -> None:
    backend = FakeBackend(n_slots=4, n_ctx_slot=256, n_batch=64)
    h = Harness(backend, prefill_budget=8)
    h.submit("s", prompt_of(4), params(40))
    h.sched.step()  # alone: the whole prompt in one step
    h.submit("long", prompt_of(60, 3), params(2))
    steps_before = len(backend.batches)
    h.run()
    long_batches = [
        [bt for bt in batch if bt.seq_id != backend.batches[0][0].seq_id]
        for batch in backend.batches[steps_before:]
    ]
    assert max(len(b) for b in long_batches) <= 8
    # 60 prompt tokens in chunks of at most 8, then the first sampled token fed back
    assert sum(len(b) for b in long_batches) == 61
    final = h.final("long")
    assert final is not None
    assert final.finish_reason is FinishReason.LENGTH


def test_without_decoding_streams_a_prompt_uses_the_whole_batch() -> None:
    backend = FakeBackend(n_slots=2, n_ctx_slot=256, n_batch=64)
    h = Harness(backend, prefill_budget=8)
    h.submit("long", prompt_of(60), params(2))
    h.sched.step()
    assert len(backend.batches[0]) == 60
