"""The scheduler on a fake backend: abort at each stage, prefix reuse, stats, decode errors."""

from __future__ import annotations

from app.engine.backend import DecodeError
from app.engine.types import FinishReason, SamplingParams
from tests.support.fake_backend import FakeBackend, scripted_reply
from tests.unit.test_scheduler import Harness, prompt_of


def params(max_tokens: int = 8) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens)


def test_abort_while_queued_cancels_without_touching_the_model() -> None:
    h = Harness(FakeBackend(n_slots=1))
    h.submit("running", prompt_of(4), params(6))
    h.submit("queued", prompt_of(4, 3), params(6))
    h.sched.step()
    h.sched.abort("queued")
    h.sched.step()
    final = h.final("queued")
    assert final is not None
    assert final.finish_reason is FinishReason.CANCELLED
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (4, 0)
    assert [e for e in h.events["queued"] if not e.is_final] == []
    h.run()
    running = h.final("running")
    assert running is not None
    assert running.finish_reason is FinishReason.LENGTH
    assert all(bt.seq_id == 0 for b in h.backend.batches for bt in b)
    assert len(h.backend.samplers) == 1


def test_abort_while_prefilling_frees_the_slot_at_the_next_step() -> None:
    backend = FakeBackend(n_slots=1, n_batch=8, n_ctx_slot=128)
    h = Harness(backend)
    h.submit("long", prompt_of(50), params())
    h.submit("next", prompt_of(5, 7), params(3))
    h.sched.step()  # first 8 prompt tokens of "long"
    assert len(backend.kv[0]) == 8
    h.sched.abort("long")
    h.sched.step()  # abort, then "next" is admitted into the freed slot in the same step
    final = h.final("long")
    assert final is not None
    assert final.finish_reason is FinishReason.CANCELLED
    assert final.usage is not None
    assert final.usage.completion_tokens == 0
    assert (0, 0) in backend.clears
    assert backend.batches[-1][0].pos == 0  # "next" prefills from scratch
    assert backend.samplers[0].closed
    h.run()
    nxt = h.final("next")
    assert nxt is not None
    assert nxt.finish_reason is FinishReason.LENGTH


def test_abort_while_decoding_ends_one_stream_and_others_finish() -> None:
    backend = FakeBackend(n_slots=3)
    h = Harness(backend)
    for rid in ("a", "b", "c"):
        h.submit(rid, prompt_of(4, ord(rid)), params(10))
    for _ in range(4):
        h.sched.step()
    assert h.sched.stats().slots_busy == 3
    h.sched.abort("b")
    h.sched.step()
    final = h.final("b")
    assert final is not None
    assert final.finish_reason is FinishReason.CANCELLED
    assert final.usage is not None
    assert final.usage.completion_tokens == 4
    stats = h.sched.stats()
    assert stats.slots_busy == 2
    # Cancel keeps the cells that hold a valid prefix (prompt + fed tokens) for a next turn.
    assert backend.kv[1] == h.sched.kv.slots[1].tokens
    assert len(backend.kv[1]) == 4 + 3  # the 4th sampled token was never fed
    assert all(bt.seq_id != 1 for bt in backend.batches[-1])
    h.run()
    for rid in ("a", "c"):
        done = h.final(rid)
        assert done is not None
        assert done.finish_reason is FinishReason.LENGTH
        assert len(h.tokens(rid)) == 10


def test_abort_of_unknown_or_finished_ids_is_ignored() -> None:
    h = Harness(FakeBackend())
    h.submit("r", prompt_of(3), params(2))
    h.run()
    h.sched.abort("r")
    h.sched.abort("nobody")
    h.sched.step()
    assert sum(e.is_final for e in h.events["r"]) == 1
    assert "nobody" not in h.events


def test_prefix_reuse_picks_the_slot_with_the_longest_shared_prefix() -> None:
    backend = FakeBackend(n_slots=3, n_ctx_slot=128, n_batch=64)
    h = Harness(backend)
    base = prompt_of(20)
    firsts = {"x": prompt_of(12, 5), "y": base[:10] + prompt_of(5, 3), "z": base}
    for rid, prompt in firsts.items():
        h.submit(rid, prompt, params(4))
    h.run()
    z_slot = next(i for i, kv in enumerate(backend.kv) if kv[:20] == base)
    turn2 = base + h.tokens("z") + prompt_of(6, 11)
    h.submit("turn2", turn2, params(4))
    h.run()
    final = h.final("turn2")
    assert final is not None
    assert final.usage is not None
    # the prompt and the first 3 generated tokens of "z" were fed to its KV cache
    assert final.usage.cached_prompt_tokens == 23
    assert (z_slot, 23) not in backend.clears  # nothing to drop: cache == prefix
    assert backend.batches[-4][0].pos == 23  # prefill, then 3 decode steps
    assert {bt.seq_id for bt in backend.batches[-1]} == {z_slot}
    assert h.sched.stats().cached_prompt_tokens_total == 23


def test_reuse_output_equals_output_without_reuse() -> None:
    outputs = {}
    for cache in (True, False):
        h = Harness(FakeBackend(n_ctx_slot=128), prompt_cache=cache)
        h.submit("t1", prompt_of(10), params(5))
        h.run()
        h.submit("t2", prompt_of(10) + h.tokens("t1") + prompt_of(4, 2), params(5))
        h.run()
        final = h.final("t2")
        assert final is not None
        assert final.usage is not None
        assert (final.usage.cached_prompt_tokens > 0) is cache
        outputs[cache] = h.text("t2")
    assert outputs[True] == outputs[False]


def test_identical_prompt_reevaluates_the_last_token_and_drops_the_rest() -> None:
    backend = FakeBackend(n_slots=1)
    h = Harness(backend)
    h.submit("a", prompt_of(8), params(5))
    h.run()
    h.submit("b", prompt_of(8), params(5))
    h.run()
    final = h.final("b")
    assert final is not None
    assert final.usage is not None
    assert final.usage.cached_prompt_tokens == 7
    assert (0, 7) in backend.clears
    assert h.text("a") == h.text("b")


def test_request_without_cache_use_and_lru_choice_of_slot() -> None:
    backend = FakeBackend(n_slots=2)
    h = Harness(backend)
    h.submit("a", prompt_of(6), params(2))
    h.run()  # slot 0 holds "a"; slot 1 is empty
    h.submit("b", prompt_of(6), params(2), use_cache=False)
    h.run()
    final = h.final("b")
    assert final is not None
    assert final.usage is not None
    assert final.usage.cached_prompt_tokens == 0
    assert backend.batches[-2][0].seq_id == 1  # the empty slot, so "a"'s cache survives
    h.submit("c", prompt_of(6, 9), params(2))
    h.run()
    assert backend.batches[-2][0].seq_id == 0  # no match: least recently used slot


def test_stats_track_slots_queue_kv_and_totals() -> None:
    backend = FakeBackend(n_slots=2, n_ctx_slot=32)
    h = Harness(backend, max_queue=4)
    for i in range(3):
        h.submit(f"r{i}", prompt_of(5, i), params(3))
    stats = h.sched.stats()
    assert (stats.slots_total, stats.kv_cells_total, stats.max_queue) == (2, 64, 4)
    assert (stats.requests_active, stats.requests_total, stats.queue_length) == (3, 3, 1)
    h.sched.step()
    stats = h.sched.stats()
    assert (stats.slots_busy, stats.queue_length) == (2, 1)
    assert stats.kv_cells_used == backend.kv_cells_used() == 10
    h.run()
    stats = h.sched.stats()
    assert (stats.slots_busy, stats.requests_active, stats.queue_length) == (0, 0, 0)
    assert stats.prompt_tokens_total == 15
    assert stats.generated_tokens_total == 9
    assert stats.kv_cells_used == backend.kv_cells_used()


def test_decode_error_fails_the_batch_and_the_engine_goes_on() -> None:
    backend = FakeBackend(n_slots=2)
    h = Harness(backend)
    h.submit("a", prompt_of(4), params(3))
    backend.fail_with = DecodeError(1, "no KV slot")
    h.sched.step()
    final = h.final("a")
    assert final is not None
    assert final.finish_reason is FinishReason.ERROR
    assert final.error is not None
    assert "no KV slot" in final.error
    assert h.sched.stats().slots_busy == 0
    h.submit("b", prompt_of(4), params(3))
    h.run()
    done = h.final("b")
    assert done is not None
    assert done.finish_reason is FinishReason.LENGTH


def test_final_event_carries_timings() -> None:
    h = Harness(FakeBackend(reply=scripted_reply(b"abcdef"), decode_delay_s=0.002))
    h.submit("r", prompt_of(4))
    h.run()
    final = h.final("r")
    assert final is not None
    assert final.timings is not None
    t = final.timings
    assert t.queue_s >= 0
    assert t.prefill_s > 0
    assert t.decode_s > 0
    assert t.decode_tokens_per_s > 0


def test_a_cache_that_cannot_drop_a_tail_is_cleared_and_not_reused() -> None:
    backend = FakeBackend(n_slots=1)
    backend.partial_clear_ok = False
    h = Harness(backend)
    h.submit("a", prompt_of(8), params(4))
    h.run()
    h.submit("b", prompt_of(8) + prompt_of(3, 4), params(4))
    h.run()
    final = h.final("b")
    assert final is not None
    assert final.usage is not None
    assert final.usage.cached_prompt_tokens == 0
    assert backend.clears[-1] == (0, 0)
    assert len(h.tokens("b")) == 4
    assert final.finish_reason is FinishReason.LENGTH
