"""A tiny download progress display on stderr (a bar on a terminal, a few lines otherwise)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _mib(n: int) -> str:
    return f"{n / 1_048_576:.1f} MiB"


class Progress:
    """Reports bytes done out of a known (or unknown) total, at most a few times a second."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._started = time.monotonic()
        self._last_pct = -1

    def update(self, n: int) -> None:
        """Count ``n`` more bytes and redraw if it is time to."""
        self.done += n
        now = time.monotonic()
        if self.tty and now - self._last >= 0.2:
            self._last = now
            self.stream.write("\r" + self._line())
            self.stream.flush()
        elif not self.tty and self.total:
            pct = self.done * 100 // self.total
            if pct // 25 > self._last_pct // 25:  # 0, 25, 50, 75 %: a few lines in logs
                self._last_pct = pct
                self.stream.write(self._line() + "\n")
                self.stream.flush()

    def close(self) -> None:
        """Print the final state on its own line."""
        elapsed = max(time.monotonic() - self._started, 1e-6)
        end = f"{self._line()} in {elapsed:.1f} s"
        self.stream.write(("\r" + end + "\n") if self.tty else end + "\n")
        self.stream.flush()

    def _line(self) -> str:
        if not self.total:
            return f"{self.label}: {_mib(self.done)}"
        pct = min(100.0, self.done * 100 / self.total)
        filled = int(pct / 100 * 30)
        bar = "#" * filled + "-" * (30 - filled)
        return f"{self.label}: [{bar}] {pct:5.1f}% {_mib(self.done)} / {_mib(self.total)}"
