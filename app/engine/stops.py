"""Stop-string matching over a stream of text deltas.

A stop string can be split over several tokens ("<|" + "end" + "|>"), so the matcher holds
back any tail of the text that could still grow into a stop string, and releases it once it
cannot. The stop string itself and everything after it are never emitted.

The first stop string to *complete* in the stream wins (on a tie, the one that starts
first), so the result does not depend on how the text was split into deltas.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

logger = logging.getLogger(__name__)


class StopMatcher:
    """Filters text deltas, stopping at the first stop string.

    ``push`` returns ``(text_to_emit, stopped)``. Once stopped, further pushes return
    ``("", True)`` and ``matched`` is the stop string that ended the text. ``flush`` returns
    the held-back tail at the end of a stream that did not stop (text that turned out not to
    be a stop string).
    """

    __slots__ = ("_chars", "_held", "_stops", "matched", "stopped")

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        # A partial match must end in a character that occurs in some stop string: a
        # cheap test that skips the suffix search for most deltas.
        self._chars = frozenset("".join(self._stops))
        self._held = ""
        self.stopped = False
        self.matched: str | None = None

    @property
    def held(self) -> str:
        """Text held back because it may be the start of a stop string."""
        return self._held

    def push(self, text: str) -> tuple[str, bool]:
        """Add a delta; return the text that is safe to emit and whether a stop matched."""
        if self.stopped:
            return "", True
        buf = self._held + text if self._held else text
        if not buf:
            return "", False
        cut, stop = self._first_match(buf)
        if stop is not None:
            self.stopped = True
            self.matched = stop
            self._held = ""
            return buf[:cut], True
        keep = self._partial_len(buf)
        if keep:
            self._held = buf[-keep:]
            return buf[:-keep], False
        self._held = ""
        return buf, False

    def flush(self) -> str:
        """End of stream without a stop: release the held-back text."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _first_match(self, buf: str) -> tuple[int, str | None]:
        """Start index of the stop string that completes first in ``buf``, and that string
        (``(-1, None)`` when none does)."""
        best_end = -1
        best_start = -1
        best: str | None = None
        for stop in self._stops:
            start = buf.find(stop)
            if start < 0:
                continue
            end = start + len(stop)
            if best_end < 0 or end < best_end or (end == best_end and start < best_start):
                best_end, best_start, best = end, start, stop
        return best_start, best

    def _partial_len(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a stop string."""
        if buf[-1] not in self._chars:
            return 0
        longest = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(buf)), longest, -1):
                if buf.endswith(stop[:k]):
                    longest = k
                    break
        return longest
