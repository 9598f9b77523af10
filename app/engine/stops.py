"""Stop-string matching over a stream of text deltas.

A stop string can be split over several tokens ("<|" + "end" + "|>"), so the matcher holds
back any tail of the text that could still grow into a stop string, and releases it once it
cannot. The stop string itself and everything after it are never emitted.

The first stop string to *complete* in the stream wins (on a tie, the one that starts
first), so the result does not depend on how the text was split into deltas.

Matching is linear in the text: an Aho-Corasick automaton over the stop strings is fed each
character once, across deltas. Its state is the longest suffix of the text so far that is a
prefix of some stop string - exactly the tail to hold back - so no delta rescans held text
(64 stop strings of 16 KB once cost 0.15 s per token for every slot, on the engine thread).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

logger = logging.getLogger(__name__)


class _Automaton:
    """Aho-Corasick over the stop strings: a trie with failure links.

    Node 0 is the root. ``depth[n]`` is the length of node ``n``'s string; ``match[n]`` the
    length of the longest stop string that is a suffix of it (0: none).
    """

    __slots__ = ("depth", "fail", "match", "next")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.next: list[dict[str, int]] = [{}]
        self.depth = [0]
        self.match = [0]
        for stop in stops:
            node = 0
            for char in stop:
                child = self.next[node].get(char)
                if child is None:
                    child = len(self.next)
                    self.next[node][char] = child
                    self.next.append({})
                    self.depth.append(self.depth[node] + 1)
                    self.match.append(0)
                node = child
            self.match[node] = len(stop)
        self.fail = [0] * len(self.next)
        self._link()

    def _link(self) -> None:
        """Failure links, breadth first (a node's link is shallower than the node)."""
        queue = list(self.next[0].values())
        for node in queue:  # the queue grows while it is walked
            for char, child in self.next[node].items():
                queue.append(child)
                link = self.fail[node]
                while link and char not in self.next[link]:
                    link = self.fail[link]
                target = self.next[link].get(char, 0)
                self.fail[child] = target if target != child else 0
                if not self.match[child]:
                    self.match[child] = self.match[self.fail[child]]

    def step(self, node: int, char: str) -> int:
        """The state after ``char`` (amortised O(1): each failure hop gives back depth)."""
        while True:
            child = self.next[node].get(char)
            if child is not None:
                return child
            if not node:
                return 0
            node = self.fail[node]


class StopMatcher:
    """Filters text deltas, stopping at the first stop string.

    ``push`` returns ``(text_to_emit, stopped)``. Once stopped, further pushes return
    ``("", True)`` and ``matched`` is the stop string that ended the text. ``flush`` returns
    the held-back tail at the end of a stream that did not stop (text that turned out not to
    be a stop string).
    """

    __slots__ = ("_automaton", "_held", "_state", "matched", "stopped")

    def __init__(self, stops: Iterable[str]) -> None:
        self._automaton = _Automaton(tuple(dict.fromkeys(s for s in stops if s)))
        self._state = 0
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
        automaton, state = self._automaton, self._state
        buf = self._held + text if self._held else text
        base = len(self._held)
        for i, char in enumerate(text):
            state = automaton.step(state, char)
            length = automaton.match[state]
            if length:  # the longest stop ending here starts first
                end = base + i + 1
                self.stopped = True
                self.matched = buf[end - length : end]
                self._held = ""
                return buf[: end - length], True
        self._state = state
        keep = automaton.depth[state]
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """End of stream without a stop: release the held-back text."""
        held, self._held = self._held, ""
        self._state = 0
        return "" if self.stopped else held
