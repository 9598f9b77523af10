"""The decode-thread governor: fewer threads while other processes take cores."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from app.engine.llama.threads import (
    CpuTimes,
    ThreadGovernor,
    parse_proc_stat,
    read_cpu_times,
    threads_for,
)

PROC_STAT = """cpu  300 0 100 900 10 0 0 0 0 0
cpu0 100 0 50 400 5 0 0 0 0 0
cpu1 200 0 50 500 5 0 0 0 0 0
cpu2 7 0 7 7 0 0 0 7 0 0
intr 1 2 3
ctxt 99
"""


def test_proc_stat_sums_the_watched_cpus_with_steal_as_busy() -> None:
    assert parse_proc_stat(PROC_STAT, {0}, 100.0) == (1.5, 5.55)
    assert parse_proc_stat(PROC_STAT, {0, 1}, 100.0) == pytest.approx((4.0, 13.1))
    assert parse_proc_stat(PROC_STAT, {2}, 100.0) == pytest.approx((0.21, 0.28))
    assert parse_proc_stat(PROC_STAT, {5}, 100.0) == (0.0, 0.0)


def test_reading_this_machine_or_nothing(tmp_path: Path) -> None:
    assert read_cpu_times({0}, tmp_path / "missing") is None
    (tmp_path / "stat").write_text(PROC_STAT)
    times = read_cpu_times({0, 1}, tmp_path / "stat")
    assert times is not None
    assert times.own >= 0.0


@pytest.mark.parametrize(
    ("cores", "neighbour", "max_threads", "expected"),
    [
        (2, 0.0, 2, 2),
        (2, 0.3, 2, 2),  # an HTTP client or a browser tab: no change
        (2, 0.5, 2, 1),
        (2, 1.0, 2, 1),
        (2, 2.0, 2, 1),  # never fewer than one
        (8, 2.0, 8, 6),
        (8, 0.0, 4, 4),  # never more than configured
    ],
)
def test_threads_for(cores: int, neighbour: float, max_threads: int, expected: int) -> None:
    assert threads_for(cores, neighbour, max_threads) == expected


class FakeMachine:
    """Two CPUs; each ``tick`` adds ``wall`` seconds, ``ours`` of our CPU and ``theirs``."""

    def __init__(self) -> None:
        self.now = 0.0
        self.times = CpuTimes(busy=0.0, total=0.0, own=0.0)
        self.available = True

    def read(self, cpus: Collection[int]) -> CpuTimes | None:
        assert set(cpus) == {0, 1}
        return self.times if self.available else None

    def clock(self) -> float:
        return self.now

    def tick(self, ours: float, theirs: float, wall: float = 0.5) -> None:
        t = self.times
        self.times = CpuTimes(
            t.busy + (ours + theirs) * wall, t.total + 2 * wall, t.own + ours * wall
        )
        self.now += wall


def governor(machine: FakeMachine, adaptive: bool = True) -> ThreadGovernor:
    return ThreadGovernor(
        2, adaptive=adaptive, cpus={0, 1}, read=machine.read, clock=machine.clock, interval=0.5
    )


def test_a_busy_neighbour_takes_a_thread_at_once_and_gives_it_back_slowly() -> None:
    m = FakeMachine()
    g = governor(m)
    assert g.adaptive
    assert g.threads == 2
    m.tick(ours=2.0, theirs=0.1)
    assert g.poll() is None
    assert g.threads == 2
    m.tick(ours=1.0, theirs=1.0)
    assert g.poll() == 1
    assert g.neighbour == pytest.approx(1.0)
    m.tick(ours=1.0, theirs=1.0)
    assert g.poll() is None
    assert g.threads == 1
    m.tick(ours=1.0, theirs=0.0)  # the neighbour left: one sample is not enough
    assert g.poll() is None
    assert g.threads == 1
    m.tick(ours=1.0, theirs=0.0)
    assert g.poll() == 2
    assert g.threads == 2
    assert g.changes == 2


def test_polls_are_rate_limited() -> None:
    m = FakeMachine()
    g = governor(m)
    m.tick(ours=1.0, theirs=1.0, wall=0.2)
    assert g.poll() is None  # not due yet: no /proc read, no decision
    m.tick(ours=1.0, theirs=1.0, wall=0.4)
    assert g.poll() == 1


def test_fixed_threads_and_unreadable_machines_stay_put() -> None:
    m = FakeMachine()
    fixed = governor(m, adaptive=False)
    m.tick(ours=1.0, theirs=2.0)
    assert not fixed.adaptive
    assert fixed.poll() is None
    assert fixed.threads == 2
    m.available = False
    blind = governor(m)
    m.tick(ours=1.0, theirs=2.0)
    assert not blind.adaptive
    assert blind.poll() is None
    single = ThreadGovernor(1, adaptive=True, cpus={0}, read=lambda c: m.times, clock=m.clock)
    assert not single.adaptive  # one CPU: nothing to give back


def test_after_an_idle_spell_a_fresh_short_window() -> None:
    m = FakeMachine()
    g = governor(m)
    m.tick(ours=0.0, theirs=0.0, wall=30.0)  # idle, then a neighbour started just now
    m.tick(ours=1.0, theirs=1.0, wall=0.5)
    assert g.poll() is None  # the 30 s window would say 0.03 cores: start a new one instead
    m.tick(ours=1.0, theirs=1.0, wall=0.25)
    assert g.poll() == 1
