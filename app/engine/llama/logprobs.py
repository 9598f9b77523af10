"""Log-probabilities of a sampled token and its top alternatives, from a logit array.

The logits are those the sampler chain saw after logit bias, repetition penalties and a
grammar's mask, before temperature, top-k, top-p and min-p (the sampler copies them at that
point, in token id order). Masked tokens (-inf) are never listed as alternatives; a sampled
token with no probability at all reports OpenAI's floor, -9999.0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from app.engine.types import TokenLogprob

FLOOR = -9999.0


def token_logprob(
    logits: np.ndarray, token: int, n_top: int, piece: Callable[[int], bytes]
) -> TokenLogprob:
    """``token``'s logprob and the ``n_top`` most likely tokens (best first)."""
    values = logits.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return TokenLogprob(piece(token), FLOOR)
    peak = values[finite].max()
    logprobs = values - (peak + np.log(np.exp(values[finite] - peak).sum()))
    top: tuple[tuple[bytes, float], ...] = ()
    if n_top > 0:
        k = min(n_top, int(finite.sum()))
        best = np.argpartition(-np.where(finite, logprobs, -np.inf), k - 1)[:k]
        best = best[np.argsort(-logprobs[best], kind="stable")]
        top = tuple((piece(int(i)), float(logprobs[i])) for i in best)
    value = float(logprobs[token])
    return TokenLogprob(piece(token), value if np.isfinite(value) else FLOOR, top)
