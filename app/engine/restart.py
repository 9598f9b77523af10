"""When to restart an engine process that died, and when to give up (pure, no processes)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class CrashPolicy:
    """Restart with exponential backoff; after ``max_crashes`` within ``window_s``, give up.

    A model that crashes its process on every load or on a request that clients keep
    retrying would otherwise restart forever, each time taking the CPU (or GPU) for a load.
    """

    max_crashes: int = 3
    window_s: float = 60.0
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0
    _crashes: deque[float] = field(default_factory=deque)

    def crashed(self, now: float) -> float | None:
        """Record a crash at ``now`` (monotonic seconds): the delay before the restart, or
        None when the engine crashed too often and should stay down."""
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self.window_s:
            self._crashes.popleft()
        recent = len(self._crashes)
        if recent >= self.max_crashes:
            return None
        delay: float = self.first_delay_s * 2.0 ** (recent - 1)
        return min(delay, self.max_delay_s)

    @property
    def recent(self) -> int:
        """Crashes within the window, as of the last one recorded."""
        return len(self._crashes)
