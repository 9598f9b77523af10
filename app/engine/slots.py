"""The llama context's sequences (slots) and what their KV caches hold.

A slot keeps the tokens that are in its KV cache after its last request, so the next
request with the same prompt prefix (the next turn of a chat) prefills only the rest.
Engine thread only, except the read-only counts used by stats.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.engine.backend import ModelBackend

if TYPE_CHECKING:
    from app.engine.sequence import Sequence

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Slot:
    """One sequence id of the llama context and what its KV cache holds."""

    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens in the KV cache while idle
    seq: Sequence | None = None
    last_used: int = 0  # admission counter, for least-recently-used choice

    @property
    def n_cells(self) -> int:
        """KV cells this slot holds right now."""
        seq = self.seq
        return seq.n_past if seq is not None else len(self.cached)


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the common case for a chat's next turn: one C-level compare
        return n
    lo, hi = 0, n  # invariant: a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def choose_slot(free: list[Slot], prompt: list[int], use_cache: bool) -> tuple[Slot, int]:
    """Pick the free slot for ``prompt`` and how many of its cached tokens to keep.

    With the cache on, the slot sharing the longest prefix with the prompt wins. At least
    the last prompt token is always evaluated again so that there are logits to sample
    from. Without a useful match, an empty slot, else the least recently used one, is
    taken, so that the caches of recent conversations survive longest.
    """
    best: Slot | None = None
    best_len = 0
    if use_cache:
        limit = len(prompt) - 1
        for slot in free:
            n = min(common_prefix_len(slot.cached, prompt), limit)
            if n > best_len or (
                n == best_len and n > 0 and best is not None and slot.last_used < best.last_used
            ):
                best, best_len = slot, n
    if best is None or best_len == 0:
        best = min(free, key=lambda s: (len(s.cached) > 0, s.last_used))
        best_len = 0
    return best, best_len


class SlotPool:
    """The slots of one context: admission with prefix reuse, release, KV accounting."""

    def __init__(self, backend: ModelBackend) -> None:
        self._backend = backend
        self.slots = [Slot(i) for i in range(backend.n_slots)]
        self._admissions = 0

    def busy(self) -> int:
        """Slots running a request."""
        return sum(1 for slot in self.slots if slot.seq is not None)

    def cells_used(self) -> int:
        """KV cells held by all slots (running requests and idle caches)."""
        return sum(slot.n_cells for slot in self.slots)

    def assign(self, seq: Sequence, use_cache: bool) -> int:
        """Put ``seq`` into the best free slot; returns how many cached prompt tokens it keeps."""
        free = [slot for slot in self.slots if slot.seq is None]
        slot, reuse = choose_slot(free, seq.prompt, use_cache)
        if len(slot.cached) > reuse:
            reuse = self._trim(slot, reuse)
        self._admissions += 1
        slot.last_used = self._admissions
        slot.cached = []  # while running, the sequence's own tokens describe the cache
        slot.seq, seq.slot = seq, slot
        return reuse

    def release(self, slot: Slot, keep: list[int] | None) -> None:
        """Free a slot, keeping ``keep`` (the tokens in its cache) or dropping every cell."""
        if keep is None:
            self._backend.clear_seq(slot.seq_id, 0)
            slot.cached = []
        else:
            slot.cached = keep
        slot.seq = None

    def forget(self, slot: Slot) -> None:
        """After a crash: mark the slot free and its cache unknown (never reused)."""
        slot.seq = None
        slot.cached = []

    def _trim(self, slot: Slot, keep: int) -> int:
        """Drop a slot's cached cells from ``keep`` on; returns how many cells were kept.

        Some models' caches (sliding-window or recurrent layers) cannot drop a tail, only
        everything: then the prefix is not reused.
        """
        if keep:
            try:
                self._backend.clear_seq(slot.seq_id, keep)
                return keep
            except RuntimeError as exc:
                logger.info("slot %d cannot keep a prefix (%s); clearing it", slot.seq_id, exc)
        self._backend.clear_seq(slot.seq_id, 0)
        return 0
