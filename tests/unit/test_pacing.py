"""The prefill pacer: a prompt chunk costs about one decode step while streams decode."""

from __future__ import annotations

from app.engine.pacing import MIN_TOKENS, START_TOKENS, TAIL_STEPS, PrefillPacer


def test_a_fixed_budget_wins() -> None:
    pacer = PrefillPacer(16, 512)
    pacer.observe(7, 0, 0.040)
    assert pacer.budget() == 16
    assert PrefillPacer(4096, 512).budget() == 512


def test_before_any_measurement_a_small_start_budget() -> None:
    assert PrefillPacer(0, 512).budget() == START_TOKENS
    assert PrefillPacer(0, 16).budget() == 16


def test_the_budget_makes_a_chunk_cost_about_one_decode_step() -> None:
    pacer = PrefillPacer(0, 512)
    for _ in range(20):
        pacer.observe(7, 0, 0.040)  # decode-only steps: 40 ms
        pacer.observe(0, 100, 0.300)  # a prefill alone: 3 ms a prompt token
    assert abs(pacer.budget() - 13) <= 1  # 40 ms / 3 ms
    for _ in range(20):
        pacer.observe(7, 13, 0.040 + 13 * 0.003)  # mixed steps keep the estimate
    assert abs(pacer.budget() - 13) <= 1


def test_the_budget_stays_within_bounds() -> None:
    slow_prompt = PrefillPacer(0, 512)
    slow_prompt.observe(1, 0, 0.001)
    slow_prompt.observe(0, 10, 1.0)
    assert slow_prompt.budget() == MIN_TOKENS
    fast_prompt = PrefillPacer(0, 64)
    fast_prompt.observe(8, 0, 0.5)
    fast_prompt.observe(0, 100, 0.001)
    assert fast_prompt.budget() == 64


def test_a_mixed_step_before_any_decode_only_step_is_not_guessed() -> None:
    pacer = PrefillPacer(0, 512)
    pacer.observe(3, 20, 0.1)
    assert pacer.token_s is None


def test_a_short_tail_goes_in_one_step_a_long_prompt_is_paced() -> None:
    pacer = PrefillPacer(0, 512)
    pacer.observe(3, 0, 0.040)
    pacer.observe(3, 8, 0.040 + 8 * 0.0057)  # a prompt token costs about a decode token
    assert pacer.budget() == MIN_TOKENS
    assert pacer.budget(27) == 27  # a chat's next turn: one step, not four
    assert pacer.budget(TAIL_STEPS * MIN_TOKENS) == TAIL_STEPS * MIN_TOKENS
    assert pacer.budget(TAIL_STEPS * MIN_TOKENS + 1) == MIN_TOKENS  # a long prompt
    assert pacer.budget(5) == MIN_TOKENS  # fits anyway
    assert PrefillPacer(16, 512).budget(40) == 16  # a fixed budget still wins
    assert PrefillPacer(0, 20).budget(60) == 20  # never more than a batch
