"""The scheduler on a fake backend, stepped by hand (no threads): batches, finishing, text."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from time import perf_counter

import pytest

from app.engine.backend import BatchToken
from app.engine.prompt_cache import HostPromptCache
from app.engine.scheduler import Delivery, Scheduler
from app.engine.sequence import Sequence
from app.engine.speculative import SpecConfig
from app.engine.types import FinishReason, GenerationRequest, SamplingParams, TokenEvent
from app.errors import InvalidRequest, Overloaded
from tests.support.fake_backend import EOG, FakeBackend, hash_reply, scripted_reply

GREEDY = SamplingParams(temperature=0.0)


class Harness:
    """A scheduler over a FakeBackend, with every delivered event collected per request."""

    def __init__(
        self,
        backend: FakeBackend,
        *,
        max_queue: int = 8,
        prompt_cache: bool = True,
        host_cache: HostPromptCache | None = None,
        prefill_budget: int | None = None,
        speculative: SpecConfig | None = None,
    ):
        self.backend = backend
        self.events: dict[str, list[TokenEvent]] = defaultdict(list)
        self.deliveries: list[Delivery] = []
        self.sched = Scheduler(
            backend,
            deliver=self._deliver,
            max_queue=max_queue,
            prompt_cache=prompt_cache,
            host_cache=host_cache,
            # Fake decodes take no time: pace by a fixed budget (the whole batch by default).
            prefill_budget=backend.n_batch if prefill_budget is None else prefill_budget,
            speculative=speculative,
        )

    def _deliver(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        for sink, events in delivery:
            assert isinstance(sink, str)
            self.events[sink].extend(events)

    def submit(
        self,
        rid: str,
        prompt: list[int],
        sampling: SamplingParams = GREEDY,
        use_cache: bool = True,
        speculative: bool = True,
    ) -> None:
        request = GenerationRequest(
            rid, tuple(prompt), sampling, use_cache=use_cache, speculative=speculative
        )
        self.sched.enqueue(Sequence(request, list(prompt), rid, perf_counter()))

    def final(self, rid: str) -> TokenEvent | None:
        events = self.events.get(rid, [])
        return events[-1] if events and events[-1].is_final else None

    def text(self, rid: str) -> str:
        return "".join(e.text for e in self.events[rid])

    def tokens(self, rid: str) -> list[int]:
        return [e.token_id for e in self.events[rid] if e.token_id is not None]

    def run(self, max_steps: int = 1000) -> int:
        for n in range(max_steps):
            if not self.sched.stats().requests_active:
                return n
            self.sched.step()
        raise AssertionError("requests did not finish")


def prompt_of(n: int, start: int = 0) -> list[int]:
    return [ord("a") + (start + i) % 26 for i in range(n)]


def test_single_request_runs_prefill_then_decode_to_max_tokens() -> None:
    h = Harness(FakeBackend(n_batch=16))
    h.submit("r", prompt_of(5), SamplingParams(temperature=0.0, max_tokens=4))
    h.run()
    final = h.final("r")
    assert final is not None
    assert final.finish_reason is FinishReason.LENGTH
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (5, 4)
    first = h.backend.batches[0]
    assert [bt.pos for bt in first] == [0, 1, 2, 3, 4]
    assert [bt.logits for bt in first] == [False] * 4 + [True]
    assert [len(b) for b in h.backend.batches] == [5, 1, 1, 1]
    assert len(h.tokens("r")) == 4
    assert h.text("r") == "".join(chr(t) for t in h.tokens("r"))


def test_batch_holds_decode_tokens_first_then_prompt_chunks_within_n_batch() -> None:
    backend = FakeBackend(n_batch=8, n_ctx_slot=128)
    h = Harness(backend)
    h.submit("a", prompt_of(3), SamplingParams(temperature=0.0, max_tokens=30))
    h.submit("b", prompt_of(3, 5), SamplingParams(temperature=0.0, max_tokens=30))
    h.sched.step()  # both prompts prefill in one batch
    h.submit("long", prompt_of(40, 9), SamplingParams(temperature=0.0, max_tokens=2))
    for _ in range(6):
        h.sched.step()
    assert all(len(batch) <= 8 for batch in backend.batches)
    for batch in backend.batches[1:]:
        # one decode token (with logits) for each of "a" and "b", before any prompt chunk
        assert [(bt.seq_id, bt.logits) for bt in batch[:2]] == [(0, True), (1, True)]
    # while "long" prefills 6 tokens a step, "a" and "b" keep producing one token per step
    long_slot = 2
    chunked = [b for b in backend.batches[1:] if any(bt.seq_id == long_slot for bt in b)]
    assert len(chunked) == 6
    for batch in chunked:
        assert [bt.seq_id for bt in batch[2:]] == [long_slot] * 6
    assert len(h.tokens("a")) == len(h.tokens("b")) == 7
    assert h.tokens("long") == []  # 40 tokens need 7 steps of 6


def test_long_prompt_alone_is_chunked_by_n_batch() -> None:
    backend = FakeBackend(n_batch=16, n_ctx_slot=128)
    h = Harness(backend)
    h.submit("r", prompt_of(40), SamplingParams(temperature=0.0, max_tokens=1))
    h.run()
    assert [len(b) for b in backend.batches] == [16, 16, 8]
    assert [bt.logits for bt in backend.batches[-1]][-1] is True
    assert not any(bt.logits for b in backend.batches[:2] for bt in b)


def test_concurrent_output_equals_output_alone() -> None:
    prompts = {f"r{i}": prompt_of(3 + 7 * i, i) for i in range(6)}
    params = SamplingParams(temperature=0.0, max_tokens=12)
    alone = {}
    for rid, prompt in prompts.items():
        h = Harness(FakeBackend(n_batch=8, n_ctx_slot=128))
        h.submit(rid, prompt, params)
        h.run()
        alone[rid] = h.text(rid)
    h = Harness(FakeBackend(n_batch=8, n_ctx_slot=128, n_slots=4))
    for rid, prompt in prompts.items():
        h.submit(rid, prompt, params)
    h.run()
    assert {rid: h.text(rid) for rid in prompts} == alone


def test_eog_stops_unless_ignore_eos() -> None:
    h = Harness(FakeBackend(reply=scripted_reply(b"hi")))
    h.submit("stop", prompt_of(3))
    h.submit("ignore", prompt_of(3), SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True))
    h.run()
    final = h.final("stop")
    assert final is not None
    assert final.finish_reason is FinishReason.STOP
    assert h.text("stop") == "hi"
    assert h.tokens("stop") == [ord("h"), ord("i")]
    assert final.usage is not None
    assert final.usage.completion_tokens == 3
    ignored = h.final("ignore")
    assert ignored is not None
    assert ignored.finish_reason is FinishReason.LENGTH
    assert EOG in h.tokens("ignore")


def test_generation_that_fills_the_slot_context_ends_with_length() -> None:
    backend = FakeBackend(n_ctx_slot=16, reply=scripted_reply(b"", then_eog=False))
    h = Harness(backend)
    h.submit("r", prompt_of(10))
    h.run()
    final = h.final("r")
    assert final is not None
    assert final.finish_reason is FinishReason.LENGTH
    assert final.usage is not None
    # 10 prompt cells + 6 fed tokens fill 16 cells; the 7th sampled token is the last.
    assert final.usage.completion_tokens == 7
    assert len(backend.kv[0]) == 16


def test_prompt_one_short_of_the_context_still_generates() -> None:
    backend = FakeBackend(n_ctx_slot=16, reply=scripted_reply(b"", then_eog=False))
    h = Harness(backend)
    h.submit("r", prompt_of(15))
    h.run()
    final = h.final("r")
    assert final is not None
    assert final.usage is not None
    assert final.usage.completion_tokens == 2


def test_multibyte_output_split_over_tokens_has_no_replacement_char() -> None:
    reply = "héllo 👋 世界!".encode()
    h = Harness(FakeBackend(reply=scripted_reply(reply)))
    h.submit("r", prompt_of(4))
    h.run()
    deltas = [e.text for e in h.events["r"]]
    assert "".join(deltas) == "héllo 👋 世界!"
    assert all("\ufffd" not in d for d in deltas)
    assert len(h.tokens("r")) == len(reply)


def test_stop_string_split_over_tokens_is_not_emitted() -> None:
    h = Harness(FakeBackend(reply=scripted_reply(b"Sure. END of it")))
    h.submit("r", prompt_of(4), SamplingParams(temperature=0.0, stop=("END",)))
    h.run()
    final = h.final("r")
    assert final is not None
    assert final.finish_reason is FinishReason.STOP
    assert final.stop_sequence == "END"  # the final event says which stop ended the reply
    assert h.text("r") == "Sure. "
    assert final.usage is not None
    assert final.usage.completion_tokens == len("Sure. END")


def test_partial_stop_is_flushed_when_generation_ends() -> None:
    h = Harness(FakeBackend(reply=scripted_reply(b"a EN")))
    h.submit("r", prompt_of(4), SamplingParams(temperature=0.0, stop=("END",)))
    h.run()
    assert h.text("r") == "a EN"
    final = h.final("r")
    assert final is not None
    assert final.text == "EN"
    assert final.stop_sequence is None


def test_samplers_get_the_prompt_tail_for_penalties_and_are_closed() -> None:
    backend = FakeBackend()
    h = Harness(backend)
    prompt = prompt_of(20)
    h.submit("r", prompt, SamplingParams(temperature=0.0, max_tokens=3, penalty_last_n=8))
    h.submit("all", prompt, SamplingParams(temperature=0.0, max_tokens=3, penalty_last_n=-1))
    h.run()
    first, second = backend.samplers
    assert first.accepted[:8] == prompt[-8:]
    assert len(first.accepted) == 8 + 3
    assert second.accepted[:20] == prompt
    assert all(s.closed for s in backend.samplers)


def test_seed_reaches_the_sampler() -> None:
    backend = FakeBackend(reply=hash_reply())
    h = Harness(backend)
    params = SamplingParams(temperature=0.7, seed=1234, max_tokens=8)
    h.submit("a", prompt_of(5), params)
    h.run()
    h.submit("b", prompt_of(5), params)
    h.run()
    assert [s.seed for s in backend.samplers] == [1234, 1234]
    assert h.text("a") == h.text("b")


def test_full_queue_raises_overloaded_at_once() -> None:
    h = Harness(FakeBackend(n_slots=2), max_queue=3)
    for i in range(5):  # 2 go to free slots, 3 wait
        h.submit(f"r{i}", prompt_of(3))
    with pytest.raises(Overloaded) as info:
        h.submit("extra", prompt_of(3))
    assert (info.value.queue_length, info.value.max_queue) == (3, 3)
    h.sched.step()  # admits two; three still wait
    assert h.sched.stats().queue_length == 3
    with pytest.raises(Overloaded):
        h.submit("extra", prompt_of(3))


def test_duplicate_live_request_id_is_rejected() -> None:
    h = Harness(FakeBackend())
    h.submit("same", prompt_of(3))
    with pytest.raises(InvalidRequest):
        h.submit("same", prompt_of(3))


def test_many_requests_over_few_slots_keep_positions_consistent() -> None:
    backend = FakeBackend(n_batch=5, n_ctx_slot=64, n_slots=3)
    h = Harness(backend)
    for i in range(7):
        h.submit(f"r{i}", prompt_of(2 + 3 * i, i), SamplingParams(temperature=0.0, max_tokens=4))
    h.run()
    for i in range(7):
        final = h.final(f"r{i}")
        assert final is not None
        assert final.finish_reason is FinishReason.LENGTH
    for batch in backend.batches:  # the fake also checks each pos is the next free cell
        keys = [(bt.seq_id, bt.pos) for bt in batch]
        assert len(set(keys)) == len(keys)
        assert all(isinstance(bt, BatchToken) for bt in batch)


def test_each_step_delivers_all_its_events_in_one_call() -> None:
    h = Harness(FakeBackend(n_slots=4))
    for i in range(4):
        h.submit(f"r{i}", prompt_of(3, i), SamplingParams(temperature=0.0, max_tokens=5))
    steps = h.run()
    assert len(h.deliveries) == steps == 5
    for delivery in h.deliveries:
        assert sorted(str(sink) for sink, _ in delivery) == ["r0", "r1", "r2", "r3"]
    assert [len(events) for _, events in h.deliveries[-1]] == [2, 2, 2, 2]  # token + final


def test_seed_falls_back_to_the_engine_default_then_to_random() -> None:
    backend = FakeBackend()
    events: list[object] = []
    sched = Scheduler(backend, deliver=events.append, max_queue=4, default_seed=77)
    warm = SamplingParams(temperature=0.7, max_tokens=1)
    for rid, params in (("default", warm), ("own", replace(warm, seed=5))):
        request = GenerationRequest(rid, (1, 2), params)
        sched.enqueue(Sequence(request, [1, 2], rid, perf_counter()))
    sched.step()
    assert [s.seed for s in backend.samplers] == [77, 5]
    h = Harness(FakeBackend())  # no default seed: a random one per request
    for i in range(3):
        h.submit(f"r{i}", prompt_of(3), warm)
    h.sched.step()
    assert len({s.seed for s in h.backend.samplers}) == 3


def test_reasoning_budget_closes_the_thinking_block() -> None:
    markers = ("<think>", "</think>")
    budgeted = replace(GREEDY, max_tokens=30, reasoning_budget=12, reasoning_markers=markers)
    h = Harness(FakeBackend(reply=scripted_reply(b"<think>hmm hmm hmm hmm hmm", then_eog=False)))
    h.submit("thinks", prompt_of(3), budgeted)
    h.submit("opened", prompt_of(3, 5), replace(budgeted, reasoning_open=True, reasoning_budget=4))
    h.run()
    # 12 tokens of thinking after the opening "<think>", then the close marker, then more
    assert h.text("thinks").startswith("<think>hmm hmm hmm </think>")
    assert h.text("opened").startswith("<thi</think>")  # the prompt opened it: 4 tokens


def test_reasoning_budget_leaves_a_reply_without_thinking_alone() -> None:
    plain = replace(
        GREEDY, max_tokens=20, reasoning_budget=2, reasoning_markers=("<think>", "</think>")
    )
    h = Harness(FakeBackend(reply=scripted_reply(b"The answer is 4.")))
    h.submit("answers", prompt_of(3), plain)
    h.run()
    assert h.text("answers") == "The answer is 4."


def test_batches_list_sequences_by_ascending_id_whatever_the_admission_order() -> None:
    # llama.cpp puts only consecutive sequence ids (in batch order) into one ubatch when each
    # sequence has its own KV stream: a batch in admission order would cost extra weight passes.
    backend = FakeBackend(n_batch=32, n_ctx_slot=128, n_slots=3)
    h = Harness(backend)
    h.submit("short", prompt_of(3), SamplingParams(temperature=0.0, max_tokens=2))
    h.submit("b", prompt_of(4, 3), SamplingParams(temperature=0.0, max_tokens=12))
    h.submit("c", prompt_of(5, 6), SamplingParams(temperature=0.0, max_tokens=12))
    for _ in range(4):
        h.sched.step()
    assert h.final("short") is not None
    h.submit("late", prompt_of(6, 9), SamplingParams(temperature=0.0, max_tokens=6))
    h.run()
    late = [b for b in backend.batches if any(bt.seq_id == 0 for bt in b) and len(b) > 2]
    assert late, "the late request reused the first slot next to the two running ones"
    for batch in backend.batches:
        ids = [bt.seq_id for bt in batch]
        assert ids == sorted(ids)
    assert len(h.tokens("late")) == 6
