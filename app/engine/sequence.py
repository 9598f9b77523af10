"""Per-request state on the engine thread (``Sequence``) and the KV slots it runs in (``Slot``).

Only the engine thread touches these after admission. A slot keeps the tokens that are in
its KV cache after its last request so the next request with the same prompt prefix (the
next turn of a chat) prefills only the rest.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from app.engine.backend import Sampler
from app.engine.detokenizer import Detokenizer
from app.engine.stops import StopMatcher
from app.engine.types import FinishReason, GenerationRequest, Timings, TokenEvent, Usage

logger = logging.getLogger(__name__)


class SeqState(enum.Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"  # queued, no slot yet
    PREFILLING = "prefilling"  # in a slot, prompt not fully in the KV cache
    DECODING = "decoding"  # has a sampled token waiting to be fed back
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One generation on the engine thread: prompt, KV progress, sampler and text pipeline.

    ``tokens`` is the prompt followed by the generated tokens; the KV cache of the slot
    holds ``tokens[:n_past]``. While decoding, ``tokens[-1]`` is the last sampled token,
    not fed yet. ``sink`` is the service's opaque handle for delivering events.
    """

    request: GenerationRequest
    prompt: list[int]
    sink: object
    t_submit: float
    state: SeqState = SeqState.WAITING
    slot: Slot | None = None
    sampler: Sampler | None = None
    tokens: list[int] = field(default_factory=list)
    n_past: int = 0
    n_cached: int = 0
    n_generated: int = 0
    t_admit: float = 0.0
    t_first: float = 0.0
    t_last: float = 0.0
    detok: Detokenizer = field(default_factory=Detokenizer)
    stops: StopMatcher | None = None
    out: list[TokenEvent] = field(default_factory=list)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def n_prompt(self) -> int:
        return len(self.prompt)

    def usage(self) -> Usage:
        """Token accounting so far."""
        return Usage(
            prompt_tokens=len(self.prompt),
            cached_prompt_tokens=self.n_cached,
            completion_tokens=self.n_generated,
        )

    def timings(self, now: float) -> Timings:
        """Queue wait, prefill time and decode speed so far."""
        if not self.t_admit:
            return Timings(
                queue_s=now - self.t_submit, prefill_s=0.0, decode_s=0.0, decode_tokens_per_s=0.0
            )
        first = self.t_first or now
        decode_s = (self.t_last - self.t_first) if self.t_first else 0.0
        # The first token comes from the prefill; the decode rate counts the ones after it.
        rate = (self.n_generated - 1) / decode_s if decode_s > 0 else 0.0
        return Timings(
            queue_s=self.t_admit - self.t_submit,
            prefill_s=first - self.t_admit,
            decode_s=decode_s,
            decode_tokens_per_s=rate,
        )

    def tail_text(self) -> str:
        """Held-back text at a normal end: incomplete UTF-8, then a partial stop match."""
        text = self.detok.flush()
        stops = self.stops
        if stops is None:
            return text
        if text:
            text, stopped = stops.push(text)
            if stopped:
                return text
        return text + stops.flush()

    def final_event(
        self, reason: FinishReason, now: float, *, text: str = "", error: str | None = None
    ) -> TokenEvent:
        """The last event of the stream: finish reason, usage and timings."""
        return TokenEvent(
            self.request_id,
            text,
            finish_reason=reason,
            usage=self.usage(),
            timings=self.timings(now),
            error=error,
        )


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
