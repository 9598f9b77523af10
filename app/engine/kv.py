"""The KV manager: the one owner of which tokens live in which slot's KV cells.

A slot is one sequence id of the llama context. Its ``tokens`` are exactly the tokens whose
keys and values sit in its cells, at positions ``0..len(tokens)-1``; nothing else in the
engine keeps a copy. Admission picks a slot for a prompt (``choose_slot``, a pure scoring
function), keeps the reusable prefix of what the slot holds, and may restore a longer
prefix from the host-RAM prompt cache; the scheduler appends what each decode fed; release
keeps the cells (for the next turn of the same chat) or drops them (after an error).

When a slot's conversation is evicted for an unrelated prompt, its state is first copied
into the host-RAM cache, so that conversation's next turn restores it instead of
prefilling its whole history again. Engine thread only, except the read-only counts.

Cells hold keys and values computed under one LoRA adapter set (``Slot.adapters``; the base
model is the empty set): a prompt under another set never reuses them, in a slot or from the
host-RAM cache, even when its tokens are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.engine.backend import ModelBackend
from app.engine.prompt_cache import CacheEntry, HostPromptCache, common_prefix_len
from app.engine.types import AdapterSet

logger = logging.getLogger(__name__)

DEFAULT_MIN_SIMILARITY = 0.5
"""A slot is a match for a prompt when the prompt reuses at least this share of its cache."""

MIN_SAVE_TOKENS = 16
"""Conversations shorter than this are not worth a host-RAM copy."""

COPY_RATIO = 16
"""A shared prefix is copied from another slot (or a saved conversation) below the similarity
threshold when the cells copied are at most this many times the prompt tokens it saves: a
copied cell costs a memory copy out and back, a prompt token a forward pass (about a
thousandth of that on a CPU, a twentieth through a GPU's host link)."""

MIN_COPY_TOKENS = 8
"""Fewer saved prompt tokens than this are not worth a copy."""


@dataclass(eq=False)
class Slot:
    """One sequence id of the llama context and the tokens in its KV cells."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    adapters: AdapterSet = ()  # the LoRA set the cells' keys and values were computed under
    busy: bool = False
    last_used: int = 0  # admission counter, for least-recently-used choice
    # Draft tokens a speculative decode put into the cells after ``tokens``: not part of the
    # sequence until verified (``commit``), dropped from the cells when rejected (``discard``).
    pending: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SlotView:
    """What the scoring function sees of a free slot."""

    cached: Sequence[int]
    last_used: int
    reusable: bool = True  # False: computed under another adapter set (never a prefix match)


@dataclass(frozen=True)
class Admission:
    """Where a prompt goes: a slot, the tokens its cells keep, and where they came from."""

    slot: Slot
    reused: int  # prompt tokens already in the slot's cells (not prefilled again)
    restored: int = 0  # of those, tokens restored from the host-RAM cache


def choose_slot(
    free: Sequence[SlotView],
    prompt: Sequence[int],
    *,
    use_cache: bool,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
) -> tuple[int, int]:
    """Pick a free slot for ``prompt``: (index into ``free``, cached tokens to keep).

    With the cache on, a slot matches when the prompt reuses at least ``min_similarity``
    of what the slot holds, so a long conversation is never wiped for the few header tokens
    every prompt of a chat template shares; among matches the longest reuse wins. Without a
    match, an empty slot is taken, else the least recently used one (the conversation
    least likely to come back). At least the last prompt token is always evaluated again,
    so that there are logits to sample from.
    """
    if not free:
        raise ValueError("no free slot")
    best, best_len = -1, 0
    if use_cache:
        limit = len(prompt) - 1
        for i, view in enumerate(free):
            if not view.cached or not view.reusable:
                continue
            n = min(common_prefix_len(view.cached, prompt), limit)
            if n <= 0 or n < min_similarity * len(view.cached):
                continue
            if n > best_len or (n == best_len and view.last_used > free[best].last_used):
                best, best_len = i, n
    if best >= 0:
        return best, best_len
    empty_first = min(range(len(free)), key=lambda i: (len(free[i].cached) > 0, free[i].last_used))
    # The slot's conversation gives way either way: the prefix it shares with the prompt
    # (a chat template's header, a system prompt) stays.
    taken = free[empty_first]
    if use_cache and taken.reusable and taken.cached:
        return empty_first, min(common_prefix_len(taken.cached, prompt), len(prompt) - 1)
    return empty_first, 0


def worth_copying(cells: int, saved: int) -> bool:
    """Whether copying ``cells`` KV cells to skip prefilling ``saved`` prompt tokens pays."""
    return saved >= MIN_COPY_TOKENS and cells <= COPY_RATIO * saved


class KVManager:
    """Slots, what their cells hold, admission with prefix reuse, and the host-RAM cache."""

    def __init__(
        self,
        backend: ModelBackend,
        *,
        host_cache: HostPromptCache | None = None,
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
    ) -> None:
        self._backend = backend
        self.slots = [Slot(i) for i in range(backend.n_slots)]
        self.host_cache = host_cache
        self._min_similarity = min_similarity
        self._admissions = 0

    # --- counts (any thread; may be one step old) ------------------------------------------
    def busy(self) -> int:
        """Slots running a request."""
        return sum(1 for slot in self.slots if slot.busy)

    def cells_used(self) -> int:
        """KV cells holding tokens, over all slots (running and idle)."""
        return sum(len(slot.tokens) for slot in self.slots)

    # --- engine thread ---------------------------------------------------------------------
    def admit(
        self, prompt: Sequence[int], *, use_cache: bool, adapters: AdapterSet = ()
    ) -> Admission:
        """Take the best free slot for ``prompt``, keeping (or restoring) a cached prefix
        computed under the same ``adapters``."""
        free = [slot for slot in self.slots if not slot.busy]
        views = [SlotView(s.tokens, s.last_used, s.adapters == adapters) for s in free]
        index, reuse = choose_slot(
            views, prompt, use_cache=use_cache, min_similarity=self._min_similarity
        )
        slot = free[index]
        restored = 0
        if use_cache:
            reuse, restored = self._copy_prefix(slot, prompt, reuse, adapters)
        if len(slot.tokens) > reuse:
            self._evict(slot, keep=reuse)
        slot.adapters = adapters
        self._admissions += 1
        slot.last_used = self._admissions
        slot.busy = True
        return Admission(slot, len(slot.tokens), restored)

    def append(self, slot: Slot, tokens: Sequence[int]) -> None:
        """Record tokens a successful decode put into the slot's next cells."""
        slot.tokens.extend(tokens)

    def stage(self, slot: Slot, drafts: Sequence[int]) -> None:
        """Record draft tokens a successful decode put into the cells after ``slot.tokens``."""
        slot.pending = list(drafts)

    def commit(self, slot: Slot) -> None:
        """The first pending draft token was accepted: it is part of the sequence now."""
        slot.tokens.append(slot.pending.pop(0))

    def discard(self, slot: Slot) -> None:
        """Drop the cells of the pending (rejected) draft tokens (llama_memory_seq_rm), so that
        the cells hold exactly ``slot.tokens`` again; clears the slot if its memory cannot
        drop a tail (then the cache only loses its reuse, never its exactness)."""
        if not slot.pending:
            return
        slot.pending = []
        self._trim(slot, len(slot.tokens))

    def release(self, slot: Slot, *, keep: bool) -> None:
        """Free a slot, keeping its cells for a later prompt with the same prefix or not."""
        self.discard(slot)
        if not keep:
            try:
                self._backend.clear_seq(slot.seq_id, 0)
            finally:
                slot.tokens = []
        slot.busy = False

    def forget(self, slot: Slot) -> None:
        """After a crash: mark the slot free and its cells unknown (never reused)."""
        slot.busy = False
        slot.tokens = []
        slot.pending = []

    # --- internals -------------------------------------------------------------------------
    def _copy_prefix(
        self, slot: Slot, prompt: Sequence[int], reuse: int, adapters: AdapterSet
    ) -> tuple[int, int]:
        """Give ``slot`` a longer cached prefix of ``prompt`` than its own ``reuse`` tokens,
        from a saved conversation or another slot, when that pays; (reused, restored)."""
        limit = len(prompt) - 1
        entry, n_saved = None, 0
        if self.host_cache is not None:
            entry, n_saved = self.host_cache.best(prompt, limit=limit, adapters=adapters)
        source, n_slot = None, 0
        for other in self.slots:
            if other is slot or other.adapters != adapters or not other.tokens:
                continue
            n = min(common_prefix_len(other.tokens, prompt), limit)
            if n > n_slot:
                source, n_slot = other, n
        # A conversation the prompt mostly continues is restored (as for slots); one that only
        # shares a header or a system prompt is copied when the copy costs less than the
        # prefill it saves, so a new chat does not prefill what every slot already holds.
        if entry is not None and n_saved > reuse and n_saved >= n_slot:
            size = len(entry.tokens)
            if n_saved >= self._min_similarity * size or worth_copying(size, n_saved - reuse):
                self._evict(slot, keep=0)
                restored = self._restore(slot, entry, n_saved)
                return restored, restored
        if source is not None and worth_copying(len(source.tokens), n_slot - reuse):
            self._evict(slot, keep=0)
            return self._copy_slot(slot, source, n_slot), 0
        return reuse, 0

    def _copy_slot(self, slot: Slot, source: Slot, keep: int) -> int:
        """Copy ``source``'s cells into the empty ``slot`` and keep the first ``keep``."""
        try:
            self._backend.load_seq(slot.seq_id, self._backend.save_seq(source.seq_id))
        except RuntimeError as exc:
            logger.info("could not copy slot %d into %d: %s", source.seq_id, slot.seq_id, exc)
            self._backend.clear_seq(slot.seq_id, 0)
            slot.tokens = []
            return 0
        slot.tokens = list(source.tokens)
        if keep < len(slot.tokens):
            self._trim(slot, keep)
        return len(slot.tokens)

    def _evict(self, slot: Slot, keep: int) -> None:
        """Drop a slot's cells from ``keep`` on, saving the conversation first if it is lost."""
        cache = self.host_cache
        if cache is not None and len(slot.tokens) - keep >= MIN_SAVE_TOKENS:
            # Even a slot that keeps a long shared prefix (a long system prompt) loses the
            # conversation after it: save that conversation for its next turn.
            self._save(slot, cache)
        self._trim(slot, keep)

    def _trim(self, slot: Slot, keep: int) -> None:
        """Drop a slot's cells from position ``keep`` on (all of them if it cannot)."""
        if keep:
            try:
                self._backend.clear_seq(slot.seq_id, keep)
                del slot.tokens[keep:]
                return
            except RuntimeError as exc:
                # Sliding-window or recurrent caches can drop everything but not a tail.
                logger.info("slot %d cannot keep a prefix (%s); clearing it", slot.seq_id, exc)
        self._backend.clear_seq(slot.seq_id, 0)
        slot.tokens = []

    def _save(self, slot: Slot, cache: HostPromptCache) -> None:
        if cache.covers(slot.tokens, slot.adapters):
            return
        try:
            data = self._backend.save_seq(slot.seq_id)
        except RuntimeError as exc:
            logger.warning("could not save slot %d to the host cache: %s", slot.seq_id, exc)
            return
        cache.put(list(slot.tokens), data, slot.adapters)

    def _restore(self, slot: Slot, entry: CacheEntry, keep: int) -> int:
        """Load a saved conversation into an empty slot and keep its first ``keep`` tokens."""
        try:
            self._backend.load_seq(slot.seq_id, entry.data)
        except RuntimeError as exc:
            logger.warning("could not restore into slot %d: %s", slot.seq_id, exc)
            self._backend.clear_seq(slot.seq_id, 0)
            slot.tokens = []
            return 0
        slot.tokens = list(entry.tokens)
        slot.adapters = entry.adapters
        if keep < len(slot.tokens):
            self._trim(slot, keep)
        if self.host_cache is not None:
            self.host_cache.record_restore(entry, len(slot.tokens))
        return len(slot.tokens)
