"""The host-RAM prompt cache: saved KV states of conversations evicted from their slots.

An entry is the token list a slot held and the bytes of that sequence's state (llama.cpp's
``llama_state_seq_get_data``), and the LoRA adapter set they were computed under. A new
prompt under the same set that shares a prefix with an entry restores it into a slot and
prefills only the rest. Bounded by bytes, least recently used first out.
Engine thread only, except the counters.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

from app.engine.types import AdapterSet, HostCacheStats

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class CacheEntry:
    """A saved conversation: its tokens, its sequence state and the adapters behind it."""

    tokens: tuple[int, ...]
    data: bytes
    adapters: AdapterSet = ()


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if list(a[:n]) == list(b[:n]):  # the common case for a chat's next turn: one C compare
        return n
    lo, hi = 0, n  # invariant: a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if list(a[lo:mid]) == list(b[lo:mid]):
            lo = mid
        else:
            hi = mid
    return lo


class HostPromptCache:
    """Saved sequence states keyed by their tokens, LRU within ``capacity_bytes``."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[int, CacheEntry] = OrderedDict()
        self._ids = count()
        self.bytes_used = 0
        self.saves = 0
        self.hits = 0
        self.restored_tokens = 0
        self.restored_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def covers(self, tokens: Sequence[int], adapters: AdapterSet = ()) -> bool:
        """True when an entry under ``adapters`` holds ``tokens`` (or a longer run of them)."""
        n = len(tokens)
        t = tuple(tokens)
        return any(
            e.adapters == adapters and len(e.tokens) >= n and e.tokens[:n] == t
            for e in self._entries.values()
        )

    def put(self, tokens: Sequence[int], data: bytes, adapters: AdapterSet = ()) -> None:
        """Save a conversation; entries it extends are dropped, the oldest go when full."""
        size = len(data)
        if size > self.capacity_bytes or not tokens:
            return
        key = tuple(tokens)
        for entry_id, entry in list(self._entries.items()):
            if entry.adapters != adapters:
                continue
            if len(entry.tokens) <= len(key) and key[: len(entry.tokens)] == entry.tokens:
                self._drop(entry_id)
        while self._entries and self.bytes_used + size > self.capacity_bytes:
            self._drop(next(iter(self._entries)))
        self._entries[next(self._ids)] = CacheEntry(key, data, adapters)
        self.bytes_used += size
        self.saves += 1
        logger.debug("host cache: saved %d tokens (%d bytes)", len(key), size)

    def best(
        self, prompt: Sequence[int], *, limit: int, adapters: AdapterSet = ()
    ) -> tuple[CacheEntry | None, int]:
        """The entry under ``adapters`` sharing the longest prefix with ``prompt`` (at most
        ``limit`` tokens)."""
        best_id, best_len = -1, 0
        for entry_id, entry in self._entries.items():
            if entry.adapters != adapters:
                continue
            n = min(common_prefix_len(entry.tokens, prompt), limit)
            if n > best_len:
                best_id, best_len = entry_id, n
        if best_id < 0:
            return None, 0
        return self._entries[best_id], best_len

    def record_restore(self, entry: CacheEntry, tokens: int) -> None:
        """``entry`` was restored for ``tokens`` prompt tokens: count it and mark it recent.

        Only a used entry is refreshed: a lookup the caller turns down leaves the order alone.
        """
        for entry_id, saved in self._entries.items():
            if saved is entry:
                self._entries.move_to_end(entry_id)
                break
        self.hits += 1
        self.restored_tokens += tokens
        self.restored_bytes += len(entry.data)

    def stats(self) -> HostCacheStats:
        """A snapshot of the counters."""
        return HostCacheStats(
            len(self._entries),
            self.bytes_used,
            self.capacity_bytes,
            self.saves,
            self.hits,
            self.restored_tokens,
            self.restored_bytes,
        )

    def _drop(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id)
        self.bytes_used -= len(entry.data)
