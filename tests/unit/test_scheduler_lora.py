"""LoRA adapter sets in the scheduler, the KV manager and the engine (fake backend).

One decode runs one adapter set; live sets take turns of ``LORA_TURN_STEPS`` steps; requests
on the same set batch together; cached cells are never reused across sets (the fake
backend raises if they are); ``AdapterScales`` resolves a request's adapters.
"""

from __future__ import annotations

from time import perf_counter

import pytest

from app.engine.lora import LORA_TURN_STEPS, AdapterScales, AdapterTurns
from app.engine.prompt_cache import HostPromptCache
from app.engine.sequence import Sequence
from app.engine.types import AdapterSet, GenerationRequest, LoraAdapter, LoraScale, SamplingParams
from app.errors import InvalidRequest
from tests.support.fake_backend import FakeBackend
from tests.unit.test_scheduler import Harness, prompt_of

A: AdapterSet = ((0, 1.0),)
B: AdapterSet = ((1, 0.5),)
CAPPED = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)


def submit(h: Harness, rid: str, prompt: list[int], adapters: AdapterSet = ()) -> None:
    request = GenerationRequest(rid, tuple(prompt), CAPPED)
    h.sched.enqueue(Sequence(request, list(prompt), rid, perf_counter(), adapters))


def test_each_decode_runs_one_adapter_set_and_sets_take_turns() -> None:
    backend = FakeBackend(n_slots=6, n_batch=64)
    h = Harness(backend)
    for i, adapters in enumerate([(), A, B, (), A, B]):
        submit(h, f"r{i}", prompt_of(5, i), adapters)
    h.run()
    for batch, adapters in zip(backend.batches, backend.batch_adapters, strict=True):
        seqs = {bt.seq_id for bt in batch}
        assert len(seqs) == 2, "the two requests of a set batch together"
        assert adapters in ((), A, B)
    # Turns: runs of LORA_TURN_STEPS batches per set, in a fixed rotation.
    runs: list[tuple[AdapterSet, int]] = []
    for adapters in backend.batch_adapters:
        if runs and runs[-1][0] == adapters:
            runs[-1] = (adapters, runs[-1][1] + 1)
        else:
            runs.append((adapters, 1))
    assert all(n <= LORA_TURN_STEPS for _, n in runs)
    assert [s for s, _ in runs[:3]] == [(), A, B]
    assert all(h.final(f"r{i}") is not None for i in range(6))
    assert all(len(h.tokens(f"r{i}")) == 12 for i in range(6))


def test_adapters_change_replies_and_mixing_does_not() -> None:
    def reply_of(adapters: AdapterSet, *, crowd: bool) -> list[int]:
        h = Harness(FakeBackend(n_slots=4, n_batch=64))
        submit(h, "me", prompt_of(7), adapters)
        if crowd:
            submit(h, "b", prompt_of(6, 3), B)
            submit(h, "base", prompt_of(9, 5))
        h.run()
        return h.tokens("me")

    assert reply_of(A, crowd=False) == reply_of(A, crowd=True)
    assert reply_of(A, crowd=False) != reply_of((), crowd=False)


def test_a_single_set_never_switches_or_waits() -> None:
    backend = FakeBackend(n_slots=4, n_batch=64)
    h = Harness(backend)
    for i in range(4):
        submit(h, f"r{i}", prompt_of(4, i), A)
    h.run()
    assert backend.adapter_switches == 1  # base -> A once
    assert all(len({bt.seq_id for bt in batch}) == 4 for batch in backend.batches)


def test_slot_cells_are_only_reused_under_the_same_set() -> None:
    backend = FakeBackend(n_slots=1, n_batch=64)
    h = Harness(backend, host_cache=HostPromptCache(1 << 20))
    prompt = prompt_of(30)
    submit(h, "a1", prompt, A)
    h.run()
    submit(h, "base", prompt)  # the fake raises if A's cells were extended under the base
    h.run()
    submit(h, "a2", prompt, A)  # A's conversation comes back from the host cache
    h.run()
    submit(h, "b", prompt, B)
    h.run()
    cached = {rid: h.final(rid).usage.cached_prompt_tokens for rid in ("a1", "base", "a2", "b")}  # type: ignore[union-attr]
    assert cached["a1"] == 0
    assert cached["base"] == 0
    assert cached["b"] == 0
    assert cached["a2"] == len(prompt) - 1
    assert h.tokens("a2") == h.tokens("a1")


def test_host_cache_entries_are_keyed_by_adapter_set() -> None:
    cache = HostPromptCache(1 << 20)
    cache.put([1, 2, 3, 4], b"under-a", A)
    assert cache.best([1, 2, 3, 4, 5], limit=4, adapters=A)[1] == 4
    assert cache.best([1, 2, 3, 4, 5], limit=4, adapters=())[0] is None
    assert cache.covers([1, 2], A)
    assert not cache.covers([1, 2], B)
    cache.put([1, 2, 3, 4, 5], b"under-b", B)  # extends A's tokens, but does not replace A's entry
    assert len(cache) == 2


def adapters_table() -> AdapterScales:
    return AdapterScales(
        [LoraAdapter(0, "v1.2", "/a.gguf"), LoraAdapter(1, "v1.3", "/b.gguf", 0.5)]
    )


def test_resolve_sorts_drops_zero_scales_and_uses_current_scales() -> None:
    scales = adapters_table()
    assert scales.resolve([]) == ()
    assert scales.resolve([LoraScale(1), LoraScale(0, 2.0)]) == ((0, 2.0), (1, 0.5))
    assert scales.resolve([LoraScale(1, 0.0)]) == ()
    scales.set_scales({1: 0.75})
    assert scales.resolve([LoraScale(1)]) == ((1, 0.75),)
    assert [a.scale for a in scales.adapters()] == [1.0, 0.75]


@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ([LoraScale(2)], "no LoRA adapter with id 2"),
        ([LoraScale(0, float("nan"))], "finite number"),
        ([LoraScale(0, 1e6)], "finite number"),
    ],
)
def test_resolve_refuses_unknown_ids_and_bad_scales(lora: list[LoraScale], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        adapters_table().resolve(lora)


def test_set_scales_is_all_or_nothing() -> None:
    scales = adapters_table()
    with pytest.raises(InvalidRequest):
        scales.set_scales({0: 0.1, 7: 1.0})
    assert [a.scale for a in scales.adapters()] == [1.0, 0.5]


def test_turns_rotate_in_order_and_skip_sets_that_left() -> None:
    turns = AdapterTurns(turn_steps=2)
    live = [(), A, B]
    picked = [turns.pick(live) for _ in range(7)]
    assert picked == [(), (), A, A, B, B, ()]
    assert turns.pick([A]) == A  # one live set: it runs every step
    assert turns.pick([(), B]) == B  # A left: the next set after it
