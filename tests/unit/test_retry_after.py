"""Retry-After on 429: an estimate from the queue and the mean generation time."""

from __future__ import annotations

import pytest

from app.api.metrics import HttpMetrics, RunningMean, retry_after_estimate


@pytest.mark.parametrize(
    ("position", "slots", "mean_s", "expected"),
    [
        (1, 4, None, 1),  # nothing finished yet: the minimum
        (1, 4, 2.0, 1),  # one ahead, four slots, 2 s each: under a second, rounded up to 1
        (8, 4, 2.0, 4),  # two rounds of four slots
        (9, 4, 2.0, 5),
        (5, 1, 3.0, 15),
        (64, 1, 30.0, 120),  # bounded above
        (3, 0, 2.0, 1),  # no slots reported: the minimum
    ],
)
def test_estimate_follows_queue_position_slots_and_mean(
    position: int, slots: int, mean_s: float | None, expected: int
) -> None:
    assert retry_after_estimate(position, slots, mean_s) == expected


def test_running_mean_starts_at_the_first_value_and_follows_new_ones() -> None:
    mean = RunningMean(weight=0.5)
    assert mean.value is None
    mean.add(4.0)
    assert mean.value == 4.0
    mean.add(2.0)
    assert mean.value == 3.0


def test_only_answered_generations_feed_the_mean() -> None:
    metrics = HttpMetrics()
    metrics.observe("GET", "/health", 200, 0.001)
    metrics.observe("POST", "/v1/completions", 400, 0.002)
    assert metrics.generation_s.value is None
    metrics.observe("POST", "/v1/completions", 200, 2.5, prompt_tokens=7, completion_tokens=3)
    assert metrics.generation_s.value == 2.5
