"""Decode threads that follow the machine: fewer while a neighbour takes a core.

ggml splits every matrix product of a decode over its threads, and the threads meet at a
barrier after each operation (hundreds per token). When another process takes one of the
cores those threads run on, every barrier waits for the thread that lost its core until the
kernel gives it back: on a 2-core machine with one busy process beside it, two decode
threads make about a quarter of the tokens one thread makes (measured: 26-32 against 89
tokens/s, default model). A laptop running the frontend's dev server, a browser or a compile
is that machine.

``ThreadGovernor`` watches how much CPU *other* processes use on the CPUs this process may
run on (``/proc/stat`` per CPU, less this process's own time) and decodes with the cores
they leave: ``floor(cores - neighbour + SLACK)``, at least one, at most the configured
threads. It samples at most every ``interval`` seconds, from the engine thread, between
decodes (two small ``/proc`` reads); it lowers the threads at once and raises them only after
two samples in a row agree, so a short burst does not make it flap. After an idle spell it
starts a fresh window (half an interval long) rather than average over the idle time. Our
own threads' time (their spinning at barriers included) never counts as a neighbour's.

Where ``/proc/stat`` cannot be read (not Linux), the governor keeps the configured threads.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PROC_STAT = Path("/proc/stat")
SLACK = 0.45
"""A neighbour's use of up to ``SLACK`` of a core (an HTTP client, the API process, a browser
tab) leaves the threads alone; more than that costs a thread."""
INTERVAL = 0.5


@dataclass(frozen=True)
class CpuTimes:
    """Busy and total seconds of the watched CPUs since boot, and this process's CPU seconds."""

    busy: float
    total: float
    own: float


def parse_proc_stat(text: str, cpus: Collection[int], ticks_per_s: float) -> tuple[float, float]:
    """(busy, total) seconds of ``cpus`` from ``/proc/stat`` text (idle and iowait are idle;
    steal counts as busy: the hypervisor gave that time to someone else)."""
    busy = total = 0
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        try:
            cpu = int(name[3:])
        except ValueError:
            continue
        if cpu not in cpus:
            continue
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        values = [int(v) for v in fields[:8]] + [0] * max(0, 8 - len(fields))
        idle = values[3] + values[4]
        all_ = sum(values[:8])
        busy += all_ - idle
        total += all_
    return busy / ticks_per_s, total / ticks_per_s


def read_cpu_times(cpus: Collection[int], path: Path = PROC_STAT) -> CpuTimes | None:
    """The watched CPUs' times and ours now; None where ``/proc/stat`` is unreadable."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    busy, total = parse_proc_stat(text, cpus, float(os.sysconf("SC_CLK_TCK")))
    if total <= 0:
        return None
    times = os.times()
    return CpuTimes(busy=busy, total=total, own=times.user + times.system)


def allowed_cpus() -> frozenset[int]:
    """The CPUs this process may run on."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return frozenset(range(os.cpu_count() or 1))


def threads_for(cores: int, neighbour: float, max_threads: int) -> int:
    """Decode threads for ``cores`` CPUs of which a neighbour uses ``neighbour`` cores."""
    return max(1, min(max_threads, math.floor(cores - neighbour + SLACK)))


class ThreadGovernor:
    """Decides the decode threads from the neighbours' CPU use (see the module docstring)."""

    def __init__(
        self,
        max_threads: int,
        *,
        adaptive: bool,
        cpus: Collection[int] | None = None,
        read: Callable[[Collection[int]], CpuTimes | None] = read_cpu_times,
        clock: Callable[[], float] = time.monotonic,
        interval: float = INTERVAL,
    ) -> None:
        self.max_threads = max(1, max_threads)
        self.threads = self.max_threads
        self.neighbour = 0.0  # cores other processes used in the last sample
        self.changes = 0
        self._cpus = frozenset(cpus) if cpus is not None else allowed_cpus()
        self._read = read
        self._clock = clock
        self._interval = interval
        self._raise_votes = 0
        self._last = read(self._cpus) if adaptive and len(self._cpus) > 1 else None
        self._adaptive = self._last is not None
        self._next = clock() + interval

    @property
    def adaptive(self) -> bool:
        return self._adaptive

    def poll(self) -> int | None:
        """The new thread count when it should change now, else None (cheap when not due)."""
        if not self._adaptive:
            return None
        now = self._clock()
        if now < self._next:
            return None
        stale = now - self._next > 3 * self._interval  # idle since: the old sample says little
        self._next = now + (self._interval / 2 if stale else self._interval)
        sample = self._read(self._cpus)
        last, self._last = self._last, sample
        if sample is None or last is None or stale:
            return None
        wall = (sample.total - last.total) / len(self._cpus)
        if wall <= 0:
            return None
        others = max(0.0, (sample.busy - last.busy) - (sample.own - last.own))
        self.neighbour = others / wall
        return self._decide(threads_for(len(self._cpus), self.neighbour, self.max_threads))

    def _decide(self, wanted: int) -> int | None:
        if wanted >= self.threads:
            self._raise_votes = self._raise_votes + 1 if wanted > self.threads else 0
            if self._raise_votes < 2:
                return None
        self._raise_votes = 0
        if wanted == self.threads:
            return None
        logger.info(
            "other processes use %.1f of %d cores: decoding with %d thread(s) instead of %d",
            self.neighbour,
            len(self._cpus),
            wanted,
            self.threads,
        )
        self.threads = wanted
        self.changes += 1
        return wanted
