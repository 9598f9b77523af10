"""How many prompt tokens one decode step may add while other streams are generating.

A step that carries a prompt chunk takes longer than a decode-only step, and every decoding
stream waits for it: on a CPU a 512-token chunk can stretch one inter-token gap fifty-fold.
The pacer measures, step by step, what a decode-only step costs and what one prompt token
adds, and lets a chunk cost about as much as one decode step - so while a long prompt
arrives, the running streams' gaps stay near twice their steady value, and the prompt still
goes in at about half the machine. A fixed budget (``--prefill-budget N``) overrides it.

The tail of a prompt is not cut up: when all the prompt tokens waiting fit in
``TAIL_STEPS`` budgets, they go in one step. On a CPU a prompt token costs about what a
decode token does (a chat's next turn, 27 new tokens after 1,300 cached ones, cost 5.7 ms a
token at 8 a step and a decode step 40 ms), so four small steps lose the streams as much
time as one step of the whole tail, and the new request's first token came 4 steps later:
its time to first token in a 6-user chat went from 0.35 s to one step.
Pure bookkeeping; the scheduler feeds it timings.
"""

from __future__ import annotations

MIN_TOKENS = 8  # a prompt always advances by at least this much per step
START_TOKENS = 32  # before anything was measured
TAIL_STEPS = 4  # waiting prompt tokens that fit in this many budgets go in one step
WEIGHT = 0.2  # of the newest measurement in the running means


class PrefillPacer:
    """The prompt-token budget of a step with decoding streams in it."""

    def __init__(self, fixed: int, n_batch: int) -> None:
        self._fixed = min(fixed, n_batch) if fixed > 0 else 0
        self._n_batch = n_batch
        self.decode_s: float | None = None  # a decode-only step
        self.token_s: float | None = None  # what one prompt token adds to a step

    def budget(self, waiting: int = 0) -> int:
        """Prompt tokens the next step may carry beside its decode tokens, when ``waiting``
        prompt tokens wait to be decoded."""
        if self._fixed:
            return self._fixed
        if self.decode_s is None or not self.token_s:
            paced = min(START_TOKENS, self._n_batch)
        else:
            paced = max(MIN_TOKENS, min(self._n_batch, int(self.decode_s / self.token_s)))
        if paced < waiting <= TAIL_STEPS * paced:
            return min(waiting, self._n_batch)
        return paced

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
