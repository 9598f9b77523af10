"""The pure parts of speculative decoding: n-gram drafts, acceptance, step cost, the plan."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from app.engine.speculative import (
    PRIOR_P,
    NgramDrafter,
    SpecConfig,
    SpecState,
    StepCost,
    plan_drafts,
    plan_uniform,
)


def test_draft_continues_the_most_recent_earlier_occurrence_of_the_suffix() -> None:
    # ... 1 2 3 [7 8] ... 1 2 3 [4 5 6] ... 1 2 3  -> the latest occurrence wins: 4 5 6
    drafter = NgramDrafter([1, 2, 3, 7, 8, 0, 1, 2, 3, 4, 5, 6, 9, 1, 2, 3])
    assert drafter.propose(3) == [4, 5, 6]
    assert drafter.propose(2) == [4, 5]
    assert drafter.propose(0) == []


def test_longer_ngram_is_preferred_to_a_more_recent_shorter_one() -> None:
    # suffix "5 1 2 3": the 3-gram "1 2 3" occurs once (followed by 4), the 1-gram "3"
    # occurs later (followed by 9)
    drafter = NgramDrafter([1, 2, 3, 4, 0, 3, 9, 5, 1, 2, 3])
    assert drafter.propose(2) == [4, 0]
    shorter = NgramDrafter([1, 2, 3, 4, 0, 3, 9, 5, 1, 2, 3], n_max=1)
    assert shorter.propose(2) == [9, 5]


def test_no_match_gives_no_draft_and_the_suffix_is_never_its_own_match() -> None:
    assert NgramDrafter([1, 2, 3, 4]).propose(4) == []
    assert NgramDrafter([]).propose(4) == []
    assert NgramDrafter([5]).propose(4) == []
    assert NgramDrafter([1, 2, 3, 4], n_min=2).propose(4) == []


def test_draft_stops_at_the_end_of_the_history() -> None:
    drafter = NgramDrafter([7, 7, 7])  # "7 7" last ended at index 2: one token follows
    assert drafter.propose(5) == [7]


def test_pushed_tokens_extend_the_index_as_the_output_grows() -> None:
    drafter = NgramDrafter([10, 11, 12, 13, 14], n_max=2)
    assert drafter.propose(3) == []
    drafter.push(10)
    drafter.push(11)
    assert drafter.propose(3) == [12, 13, 14]
    drafter.extend([12, 99])
    assert drafter.tokens == [10, 11, 12, 13, 14, 10, 11, 12, 99]
    assert drafter.propose(3) == []  # "12 99" and "99" never occurred before


def test_bad_ngram_range_is_refused() -> None:
    with pytest.raises(ValueError, match="n_min"):
        NgramDrafter([], n_max=1, n_min=2)
    with pytest.raises(ValueError, match="n_min"):
        NgramDrafter([], n_min=0)


def test_acceptance_starts_at_the_prior_rises_on_accepts_and_falls_on_misses() -> None:
    state = SpecState(NgramDrafter([]))
    assert state.p == pytest.approx(PRIOR_P)
    for _ in range(10):
        state.verified(4, 4)
    assert state.p > 0.9
    for _ in range(10):
        state.verified(4, 0)
    assert state.p < 0.3
    # Drafts not sent are checked against the next token: a reply that turns predictable
    # earns its drafts back without any being sent.
    for _ in range(8):
        draft = state.drafter.propose(1) or [0]
        state.shadow = draft[0]
        state.observe(7)
    assert state.p > 0.8
    assert state.drafter.tokens == [7] * 8
    for token in (1, 2, 3):
        state.shadow = 9
        state.observe(token)
    assert state.p < 0.5


def test_step_cost_fits_the_ratio_of_fixed_to_per_token_cost() -> None:
    cost = StepCost(ratio=1.0)
    for _ in range(20):
        cost.observe(1, 0.011)  # one size only: the slope is unknown, the prior stays
    assert cost.ratio == 1.0
    for n in (1, 3, 5, 2, 9, 1, 4) * 5:
        cost.observe(n, 0.010 + 0.001 * n)  # a = 10 ms, b = 1 ms
    assert cost.ratio == pytest.approx(10.0, rel=0.01)
    for _ in range(3):  # a few steps that waited for a busy CPU do not move the fit
        cost.observe(2, 6.0)
        cost.observe(9, 0.001)
    assert cost.ratio == pytest.approx(10.0, rel=0.01)
    flat = StepCost()
    for n in (1, 4, 8) * 5:
        flat.observe(n, 0.02)
    assert flat.ratio > 1e6  # more tokens cost nothing measurable


def test_plan_sends_drafts_while_they_pay_for_their_cost() -> None:
    # A GPU-like step (a / b = 50): a likely draft is sent whole.
    assert plan_drafts([(0.9, 8)], 1, 1, 50.0, 0.3) == [8]
    # A CPU-like step where a token costs what the fixed part does (a / b = 0.5): one token
    # of a draft pays only when its chance beats 1 / 1.5.
    assert plan_drafts([(0.6, 8)], 1, 1, 0.5, 0.0) == [0]
    assert plan_drafts([(0.95, 8)], 1, 1, 0.5, 0.0)[0] >= 3
    # The floor on a token's chance of use.
    assert plan_drafts([(0.6, 8)], 1, 1, math.inf, 0.3) == [2]  # 0.6, 0.36, then 0.216


def test_plan_gives_tokens_to_the_best_sequences_and_shrinks_with_more_streams() -> None:
    counts = plan_drafts([(0.3, 4), (0.95, 4), (0.0, 4)], 3, 3, 4.0, 0.1)
    assert counts[1] > 0
    assert counts[2] == 0
    assert counts[0] <= counts[1]
    alone = plan_drafts([(0.9, 8)], 1, 1, 4.0, 0.0)[0]
    crowded = plan_drafts([(0.9, 8)] * 8, 8, 8, 4.0, 0.0)
    assert max(crowded) < alone


def test_config_is_off_by_default_and_with_no_draft_room() -> None:
    assert not SpecConfig().enabled
    assert SpecConfig("ngram").enabled
    assert not SpecConfig("ngram", draft_max=0).enabled


def test_metrics_report_drafts_per_method_and_nothing_when_off() -> None:
    from app.api.metrics import speculative_metrics
    from app.engine.types import EngineStats

    base = EngineStats(0, 4, 0, 8, 0, 100, 0, 0, 0, 0, 0)
    assert list(speculative_metrics(base)) == []
    stats = replace(base, draft_method="ngram", draft_tokens_total=40, draft_accepted_total=30)
    families = {m.name: m.samples[0] for m in speculative_metrics(stats)}
    assert families["cria_spec_draft_tokens"].value == 40
    assert families["cria_spec_accepted_tokens"].value == 30
    assert families["cria_spec_acceptance_rate"].value == 0.75
    assert families["cria_spec_acceptance_rate"].labels == {"method": "ngram"}


def test_uniform_plan_gives_every_stream_one_length_and_weighs_the_padding() -> None:
    likely = [(0.95, 8)] * 4
    assert plan_uniform(likely, 4, 50.0, 0.0, 8) == 8  # GPU-like: the whole draft
    assert plan_uniform(likely, 4, 50.0, 0.0, 3) == 3  # within the room
    # One stream has a good draft, three have none: padding them costs three tokens per
    # draft token, which pays on a GPU-like step but not on a CPU-like one.
    lonely = [(0.95, 8), (0.6, 0), (0.6, 0), (0.6, 0)]
    assert plan_uniform(lonely, 4, 50.0, 0.0, 8) > 0
    assert plan_uniform(lonely, 4, 0.5, 0.0, 8) == 0
    assert plan_uniform([(0.1, 8)] * 4, 4, 50.0, 0.3, 8) == 0  # below the floor
