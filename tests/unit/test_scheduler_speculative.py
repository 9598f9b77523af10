"""Speculative decoding in the scheduler, on the fake backend: n-gram drafts verified in the
shared batch give exactly the output of plain decoding, in fewer steps, and leave the KV
cells holding exactly the sequence."""

from __future__ import annotations

from collections.abc import Sequence

from app.engine.speculative import NgramDrafter, SpecConfig
from app.engine.types import FinishReason, SamplingParams
from tests.support.fake_backend import FakeBackend, Reply, scripted_reply, text_tokens
from tests.unit.test_scheduler import Harness

NGRAM = SpecConfig("ngram", draft_max=6)
GREEDY = SamplingParams(temperature=0.0)
STORY = "Once upon a time a small fox lived by the river and sang to the moon every night."
EDITED = STORY.replace("fox", "cat")
PROMPT = text_tokens(f"Rewrite with a cat: {STORY}\nRewritten: ")


def harness(spec: SpecConfig | None, reply: Reply, **kw: int) -> Harness:
    # A GPU-like cost (a step costs about what one token does) makes drafts pay off.
    backend = FakeBackend(
        n_batch=32, n_ctx_slot=kw.pop("n_ctx_slot", 256), reply=reply, decode_delay_s=0.001, **kw
    )
    return Harness(backend, speculative=spec)


def run(spec: SpecConfig | None, reply: Reply, params: SamplingParams, n: int = 1) -> Harness:
    h = harness(spec, reply, n_slots=max(n, 1))
    for i in range(n):
        h.submit(f"r{i}", PROMPT, params)
    h.run()
    return h


def assert_cells_exact(h: Harness) -> None:
    """Every slot's KV cells hold exactly the tokens the KV manager says (no rejected draft)."""
    for slot in h.sched.kv.slots:
        assert h.backend.kv[slot.seq_id] == slot.tokens
        assert slot.pending == []


def outcome(h: Harness, rid: str = "r0") -> tuple[str, list[int], FinishReason | None, int]:
    final = h.final(rid)
    assert final is not None
    assert final.usage is not None
    return h.text(rid), h.tokens(rid), final.finish_reason, final.usage.completion_tokens


def drafted_batches(h: Harness) -> list[int]:
    """Per batch, how many tokens of one sequence beyond its first had logits."""
    counts = []
    for batch in h.backend.batches:
        per_seq: dict[int, int] = {}
        for bt in batch:
            if bt.logits:
                per_seq[bt.seq_id] = per_seq.get(bt.seq_id, 0) + 1
        counts.append(max(per_seq.values(), default=0) - 1)
    return counts


def test_copying_reply_is_identical_and_takes_fewer_decodes() -> None:
    params = SamplingParams(temperature=0.0, max_tokens=200)
    plain = run(None, scripted_reply(EDITED.encode()), params)
    spec = run(NGRAM, scripted_reply(EDITED.encode()), params)
    assert outcome(spec) == outcome(plain)
    assert outcome(spec)[0] == EDITED
    assert len(spec.backend.batches) < len(plain.backend.batches) * 0.6
    assert max(drafted_batches(spec)) > 1  # drafts were verified, several tokens at once
    stats = spec.sched.stats()
    assert stats.draft_method == "ngram"
    assert 0 < stats.draft_accepted_total < stats.draft_tokens_total
    assert plain.sched.stats().draft_tokens_total == 0
    assert_cells_exact(spec)


def test_four_streams_match_plain_decoding() -> None:
    params = SamplingParams(temperature=0.0, max_tokens=120)
    plain = run(None, scripted_reply(EDITED.encode()), params, n=4)
    spec = run(NGRAM, scripted_reply(EDITED.encode()), params, n=4)
    for i in range(4):
        assert outcome(spec, f"r{i}") == outcome(plain, f"r{i}")
    assert spec.sched.stats().draft_accepted_total > 0
    # Decoding sequences of one step send equally long parts (one ubatch in llama.cpp).
    for batch in spec.backend.batches:
        lengths: dict[int, int] = {}
        for bt in batch:
            lengths[bt.seq_id] = lengths.get(bt.seq_id, 0) + 1
        if len(lengths) > 1 and max(lengths.values()) <= 1 + NGRAM.draft_max:
            assert len(set(lengths.values())) == 1, lengths
    assert_cells_exact(spec)


def test_stop_string_inside_an_accepted_draft_ends_the_sequence_there() -> None:
    params = SamplingParams(temperature=0.0, max_tokens=200, stop=("by the",))
    plain = run(None, scripted_reply(EDITED.encode()), params)
    spec = run(NGRAM, scripted_reply(EDITED.encode()), params)
    assert outcome(spec) == outcome(plain)
    assert outcome(spec)[0] == "Once upon a time a small cat lived "
    assert outcome(spec)[2] is FinishReason.STOP
    assert_cells_exact(spec)


def test_max_tokens_and_a_full_slot_end_exactly_as_without_drafts() -> None:
    for params, n_ctx in ((SamplingParams(temperature=0.0, max_tokens=37), 256), (GREEDY, 150)):
        results = []
        for spec in (None, NGRAM):
            h = harness(spec, scripted_reply(EDITED.encode(), then_eog=False), n_ctx_slot=n_ctx)
            h.submit("r0", PROMPT, params)
            h.run()
            assert_cells_exact(h)
            results.append(outcome(h))
        assert results[0] == results[1]
        assert results[1][2] is FinishReason.LENGTH


def adversary(history: Sequence[int], n_sampled: int, seed: int) -> int:
    """The next token is never the one an n-gram draft would propose."""
    if n_sampled >= 60:
        return 257  # EOG
    guess = NgramDrafter(history).propose(1)
    return ord("a") + (guess[0] + 1) % 26 if guess else ord("a")


def test_a_draft_rejected_every_step_still_gives_the_right_text() -> None:
    spec_cfg = SpecConfig("ngram", draft_max=4, min_accept=0.0)
    plain = run(None, adversary, GREEDY)
    spec = run(spec_cfg, adversary, GREEDY)
    assert outcome(spec) == outcome(plain)
    stats = spec.sched.stats()
    assert stats.draft_tokens_total > 0
    assert stats.draft_accepted_total == 0
    assert spec.backend.clears  # the rejected cells were removed
    assert_cells_exact(spec)


def test_next_turn_reuses_the_cache_after_rejections() -> None:
    reply = scripted_reply(EDITED.encode())
    cached = []
    for spec in (None, NGRAM):
        h = harness(spec, reply)
        h.submit("t1", PROMPT, GREEDY)
        h.run()
        assert_cells_exact(h)
        turn2 = PROMPT + h.tokens("t1") + text_tokens(" And again: ")
        h.submit("t2", turn2, GREEDY)
        h.run()
        final = h.final("t2")
        assert final is not None
        assert final.usage is not None
        cached.append(final.usage.cached_prompt_tokens)
        assert_cells_exact(h)
    assert cached[0] == cached[1] == len(PROMPT) + len(EDITED)  # all but the EOG token


def test_request_can_opt_out_and_a_memory_without_tail_trims_never_drafts() -> None:
    reply = scripted_reply(EDITED.encode())
    h = harness(NGRAM, reply)
    h.submit("r0", PROMPT, GREEDY, speculative=False)
    h.run()
    assert max(drafted_batches(h)) == 0
    h = harness(NGRAM, reply)
    h.backend.partial_clear_ok = False
    h = Harness(h.backend, speculative=NGRAM)
    h.submit("r0", PROMPT, GREEDY)
    h.run()
    assert max(drafted_batches(h)) == 0
    assert h.sched.stats().draft_method == "off"
