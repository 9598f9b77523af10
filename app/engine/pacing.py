"""How many prompt tokens one decode step may add while other streams are generating.

A step that carries a prompt chunk takes longer than a decode-only step, and every decoding
stream waits for it: on a CPU a 512-token chunk can stretch one inter-token gap fifty-fold.
The pacer measures, step by step, what a decode-only step costs and what one prompt token
adds, and lets a chunk cost about as much as one decode step - so while a long prompt
arrives, the running streams' gaps stay near twice their steady value, and the prompt still
goes in at about half the machine. A fixed budget (``--prefill-budget N``) overrides it.
Pure bookkeeping; the scheduler feeds it timings.
"""

from __future__ import annotations

MIN_TOKENS = 8  # a prompt always advances by at least this much per step
START_TOKENS = 32  # before anything was measured
WEIGHT = 0.2  # of the newest measurement in the running means


class PrefillPacer:
    """The prompt-token budget of a step with decoding streams in it."""

    def __init__(self, fixed: int, n_batch: int) -> None:
        self._fixed = min(fixed, n_batch) if fixed > 0 else 0
        self._n_batch = n_batch
        self.decode_s: float | None = None  # a decode-only step
        self.token_s: float | None = None  # what one prompt token adds to a step

    def budget(self) -> int:
        """Prompt tokens the next step may carry beside its decode tokens."""
        if self._fixed:
            return self._fixed
        if self.decode_s is None or not self.token_s:
            return min(START_TOKENS, self._n_batch)
        return max(MIN_TOKENS, min(self._n_batch, int(self.decode_s / self.token_s)))

    def observe(self, n_decode: int, n_prompt: int, seconds: float) -> None:
        """One decode's shape and wall time."""
        if n_prompt == 0:
            if n_decode:
                self.decode_s = _mean(self.decode_s, seconds)
            return
        base = 0.0
        if n_decode:
            if self.decode_s is None:
                return  # cannot split the step's time yet
            base = self.decode_s
        self.token_s = _mean(self.token_s, max(seconds - base, 0.0) / n_prompt)


def _mean(old: float | None, value: float) -> float:
    return value if old is None else old + WEIGHT * (value - old)
