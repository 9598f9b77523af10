"""Per-request state on the engine thread: ``Sequence``.

Created on the event loop thread at submit; only the engine thread touches it after that.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.engine.backend import Sampler
from app.engine.types import (
    AdapterSet,
    FinishReason,
    GenerationRequest,
    Timings,
    TokenEvent,
    Usage,
)

if TYPE_CHECKING:
    from app.engine.kv import Slot
    from app.engine.output import SequenceOutput
    from app.engine.speculative import SpecState

logger = logging.getLogger(__name__)


class SeqState(enum.Enum):
    """Where a sequence is in its life."""

    WAITING = "waiting"  # queued, no slot yet
    PREFILLING = "prefilling"  # in a slot, prompt not fully in the KV cache
    DECODING = "decoding"  # has a sampled token waiting to be fed back
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One generation on the engine thread: prompt, sampler, text pipeline and its slot.

    What the slot's KV cells hold is the KV manager's to know (``slot.tokens``); while
    prefilling, they are a prefix of ``prompt``. While decoding, ``generated[-1]`` is the
    last sampled token, not fed yet. ``sink`` is the service's opaque handle for events.
    ``adapters`` is the LoRA set it runs under (resolved from the request at submit).
    """

    request: GenerationRequest
    prompt: list[int]
    sink: object
    t_submit: float
    adapters: AdapterSet = ()
    state: SeqState = SeqState.WAITING
    slot: Slot | None = None
    sampler: Sampler | None = None
    generated: list[int] = field(default_factory=list)
    n_cached: int = 0  # prompt tokens found in the KV cache at admission (not prefilled)
    t_admit: float = 0.0
    t_first: float = 0.0
    t_last: float = 0.0
    output: SequenceOutput | None = None  # its text pipeline, from admission on
    out: list[TokenEvent] = field(default_factory=list)
    forced: list[int] = field(default_factory=list)  # tokens to emit next instead of sampling
    spec: SpecState | None = None  # its n-gram drafter, when it decodes speculatively

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def n_prompt(self) -> int:
        return len(self.prompt)

    @property
    def n_past(self) -> int:
        """Tokens in the slot's KV cells (positions 0..n_past-1)."""
        slot = self.slot
        return len(slot.tokens) if slot is not None else 0

    def usage(self) -> Usage:
        """Token accounting so far."""
        return Usage(
            prompt_tokens=len(self.prompt),
            cached_prompt_tokens=self.n_cached,
            completion_tokens=len(self.generated),
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
        rate = (len(self.generated) - 1) / decode_s if decode_s > 0 else 0.0
        return Timings(
            queue_s=self.t_admit - self.t_submit,
            prefill_s=first - self.t_admit,
            decode_s=decode_s,
            decode_tokens_per_s=rate,
        )

    def tail_text(self) -> str:
        """Held-back text at a normal end (see ``SequenceOutput.tail_text``)."""
        return self.output.tail_text() if self.output is not None else ""

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
            stop_sequence=self.output.stop_sequence if self.output is not None else None,
        )
