"""Speculative decoding without a draft model: n-gram (prompt-lookup) drafts, and how many
draft tokens each sequence puts into a step. Pure bookkeeping (no model calls).

**Drafts.** A sequence's history is its prompt and its output. ``NgramDrafter`` finds the
most recent earlier occurrence of the history's last ``n`` tokens (``n`` from ``n_max``
down to ``n_min``) and proposes the tokens that followed it. An index from each n-gram to
where it last ended is updated as tokens arrive, so a lookup costs O(n_max), not O(history).

**Verification** (in the scheduler): the sequence's last sampled token and its draft go into
the same batch as the other streams, each position with logits. Position ``i`` is sampled
with the sequence's own sampler chain; while the sample equals draft token ``i`` the next
position is sampled too; the first sample that differs is kept as the next token and the
rest is dropped. Every sample at position ``i`` is drawn from exactly the distribution that
plain decoding would draw the token from (the logits of the same context, the same chain
with the same penalty history, grammar state and random generator state, because the
chain only ever saw accepted tokens), and the draft only decides whether the *next*
position's logits can be used. So for a draft that does not depend on the random draws
(n-gram lookup is a function of the tokens so far), the output distribution - and, with a
seed, the output itself - is unchanged, at any temperature; only the number of decodes
changes. (The standard rejection rule of speculative sampling is needed when the draft comes
from a draft model's own distribution; matching samples is its special case for a draft
that puts all its mass on one token, with no residual to resample from.)

**How many tokens.** Verifying is not free: on a CPU a batch of n tokens costs almost n
single-token decodes. ``StepCost`` fits a step's wall time as ``a + b * tokens`` from the
steps the scheduler runs (per-size medians: robust to a busy machine); ``SpecState`` keeps
each sequence's recent per-token acceptance ``p`` (accepted / (accepted + misses), decayed,
with a prior). ``plan_drafts`` adds draft tokens, best first, while a token's chance of
being used (``p ** j`` for the ``j``-th of a draft) is worth its cost - while it raises the
step's expected tokens per second - and is at least ``min_accept``. So on a GPU (``a``
large against ``b``) drafts are long; on a loaded CPU, or for free-form chat (``p`` low),
they shrink to nothing. A draft not sent is still checked against the token sampled next
(a shadow), so ``p`` follows the reply's predictability even while nothing is sent.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import median

PRIOR_P = 0.6  # the acceptance a sequence starts with (and decays back to)
PRIOR_WEIGHT = 1.0  # in tokens: how much evidence the prior is worth
DECAY = 0.7  # weight of older verification counts at each new verification
PRIOR_RATIO = 1.0  # a/b before the cost of a step was measured (one token adds half a step)


@dataclass(frozen=True)
class SpecConfig:
    """Speculative decoding settings of an engine (``method`` ``off`` disables it)."""

    method: str = "off"  # "off" or "ngram"
    draft_max: int = 8  # most draft tokens per sequence per step
    min_accept: float = 0.3  # a draft token is sent only if its chance of use is at least this
    n_max: int = 3  # longest n-gram looked up
    n_min: int = 1  # shortest n-gram looked up

    @property
    def enabled(self) -> bool:
        return self.method != "off" and self.draft_max > 0


class NgramDrafter:
    """Prompt-lookup drafts over one sequence's history (its prompt, then its output)."""

    __slots__ = ("_index", "_n_max", "_n_min", "tokens")

    def __init__(self, tokens: Iterable[int] = (), *, n_max: int = 3, n_min: int = 1) -> None:
        if not 1 <= n_min <= n_max:
            raise ValueError("need 1 <= n_min <= n_max")
        self._n_max = n_max
        self._n_min = n_min
        self.tokens: list[int] = []
        # n-gram -> the index just past its most recent occurrence that has a follower
        # (so the history's own suffix is never its own match).
        self._index: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        """Append tokens to the history."""
        for token in tokens:
            self.push(token)

    def push(self, token: int) -> None:
        """Append one token: the n-grams ending just before it now have a follower."""
        history = self.tokens
        end = len(history)
        index = self._index
        for n in range(self._n_min, min(self._n_max, end) + 1):
            index[tuple(history[end - n : end])] = end
        history.append(token)

    def propose(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the most recent earlier occurrence of the longest
        matching suffix of the history ([] when none matches)."""
        history = self.tokens
        size = len(history)
        if k <= 0:
            return []
        for n in range(min(self._n_max, size), self._n_min - 1, -1):
            end = self._index.get(tuple(history[size - n :]))
            if end is not None:
                return history[end : min(end + k, size)]
        return []


class SpecState:
    """One sequence's drafter and its recent acceptance.

    A draft that is not sent still teaches: its first token is kept as a ``shadow`` and
    compared with the token the sequence samples next (``observe``), a free one-token
    verification. So a reply that starts copying its prompt earns drafts after a few tokens,
    and free-form chat, whose shadows miss, sends none - without probing with real drafts.
    """

    __slots__ = ("accepted", "drafter", "missed", "shadow")

    def __init__(self, drafter: NgramDrafter) -> None:
        self.drafter = drafter
        self.accepted = 0.0  # decayed counts of accepted draft tokens ...
        self.missed = 0.0  # ... and of verifications that ended on a rejected draft token
        self.shadow: int | None = None  # the first token of a draft that was not sent

    @property
    def p(self) -> float:
        """Estimated chance that a draft token is accepted, given the one before it was."""
        return (self.accepted + PRIOR_P * PRIOR_WEIGHT) / (
            self.accepted + self.missed + PRIOR_WEIGHT
        )

    def verified(self, proposed: int, accepted: int) -> None:
        """Record a verification: ``accepted`` of ``proposed`` draft tokens were used."""
        self.accepted = self.accepted * DECAY + accepted
        self.missed = self.missed * DECAY + (1 if accepted < proposed else 0)

    def observe(self, token: int) -> None:
        """The sequence's next token: check the shadow draft against it, then extend the
        history."""
        if self.shadow is not None:
            self.verified(1, int(token == self.shadow))
            self.shadow = None
        self.drafter.push(token)


class StepCost:
    """A step's wall time fitted as ``a + b * tokens``; only the ratio ``a / b`` matters for
    the draft plan.

    Robust to a busy machine: each batch size keeps the median of its last ``WINDOW`` step
    times (one step that waited seconds for the CPU moves nothing), and the line is fitted
    through those medians, weighted by how many each holds, every ``REFIT_EVERY`` steps;
    sizes not seen for ``STALE_STEPS`` steps drop out (the machine's load changes).
    """

    WINDOW = 9
    REFIT_EVERY = 4
    STALE_STEPS = 2000

    __slots__ = ("_seen", "_steps", "_times", "ratio")

    def __init__(self, ratio: float = PRIOR_RATIO) -> None:
        self.ratio = ratio
        self._times: dict[int, deque[float]] = {}
        self._seen: dict[int, int] = {}
        self._steps = 0

    def observe(self, tokens: int, seconds: float) -> None:
        """One decode step of ``tokens`` batch tokens took ``seconds``."""
        times = self._times.get(tokens)
        if times is None:
            times = self._times[tokens] = deque(maxlen=self.WINDOW)
        times.append(seconds)
        self._steps += 1
        self._seen[tokens] = self._steps
        if self._steps % self.REFIT_EVERY == 0:
            self._refit()

    def _refit(self) -> None:
        oldest = self._steps - self.STALE_STEPS
        points = [
            (n, median(times), len(times))
            for n, times in self._times.items()
            if len(times) >= 3 and self._seen[n] > oldest
        ]
        if len(points) < 2:
            return  # one batch size only: the slope cannot be told apart
        total = sum(w for _, _, w in points)
        mean_n = sum(n * w for n, _, w in points) / total
        mean_t = sum(t * w for _, t, w in points) / total
        spread = sum(w * (n - mean_n) ** 2 for n, _, w in points)
        slope = sum(w * (n - mean_n) * (t - mean_t) for n, t, w in points) / spread
        if slope <= 0:
            self.ratio = math.inf  # more tokens cost nothing measurable
            return
        self.ratio = max(mean_t - slope * mean_n, 0.0) / slope


def plan_drafts(
    candidates: Sequence[tuple[float, int]],
    n_decode: int,
    n_tokens: int,
    ratio: float,
    min_accept: float,
) -> list[int]:
    """How many draft tokens each candidate sequence sends this step.

    ``candidates``: per sequence, (acceptance ``p``, draft tokens available); ``n_decode``
    sequences decode this step (one token each), in a batch of ``n_tokens`` tokens before
    drafts (prompt chunks included); ``ratio`` is ``a / b`` of ``StepCost``. A draft's
    ``j``-th token is used with chance ``p ** j`` and adds one token's cost ``b`` to a step
    of cost ``a + b * N``: drafts are added, best first, while they raise the expected tokens
    per second.
    """
    counts = [0] * len(candidates)
    offers = sorted(
        ((p**j, i) for i, (p, n) in enumerate(candidates) for j in range(1, n + 1)),
        reverse=True,
    )
    gain, size = float(n_decode), float(n_tokens)
    for chance, i in offers:
        # worth it iff chance / b > gain / (a + b * size), i.e. chance * (ratio + size) > gain
        if chance < min_accept or chance * (ratio + size) <= gain:
            break
        gain += chance
        size += 1
        counts[i] += 1
    return counts


def plan_uniform(
    candidates: Sequence[tuple[float, int]],
    n_tokens: int,
    ratio: float,
    min_accept: float,
    k_max: int,
) -> int:
    """One draft length for every decoding sequence of a step (see ``plan_drafts`` for the
    arguments; here every decoding sequence is a candidate, with 0 tokens when it has no
    draft): the ``k <= k_max`` with the most expected tokens per second, each sequence paying
    for ``k`` tokens whatever its draft's length (the rest is padding, hardly ever used)."""
    n = len(candidates)
    best_k, best = 0, n / (ratio + n_tokens)
    gain = float(n)
    for k in range(1, k_max + 1):
        gain += sum(p**k for p, size in candidates if k <= size and p**k >= min_accept)
        value = gain / (ratio + n_tokens + k * n)
        if value > best:
            best_k, best = k, value
    return best_k
