"""Per-sequence sampling with llama.cpp's sampler chain.

Chain order: logit bias (if any), penalties (when not neutral), then either greedy
(temperature <= 0) or top-k, top-p, min-p, temperature and a seeded ``dist`` draw. A seeded
chain is deterministic: same seed, same prompt, same logits -> same tokens.
"""

from __future__ import annotations

import logging
from typing import Any

from app.engine.llama import _lib
from app.engine.types import SamplingParams

logger = logging.getLogger(__name__)


def _penalties_neutral(p: SamplingParams) -> bool:
    return p.penalty_last_n == 0 or (
        p.repeat_penalty == 1.0 and p.frequency_penalty == 0.0 and p.presence_penalty == 0.0
    )


def _links(
    params: SamplingParams, n_vocab: int, n_ctx: int, seed: int
) -> list[tuple[str, tuple[Any, ...]]]:
    """The (kind, args) of each sampler in the chain, in order."""
    links: list[tuple[str, tuple[Any, ...]]] = []
    bias = {t: b for t, b in params.logit_bias.items() if 0 <= t < n_vocab}
    if bias:
        arr = (_lib.LogitBias * len(bias))(*(_lib.LogitBias(t, b) for t, b in bias.items()))
        links.append(("logit_bias", (n_vocab, len(bias), arr)))
    if not _penalties_neutral(params):
        # -1 means the whole context (llama.cpp's convention); the native ring buffer needs
        # a real size.
        last_n = n_ctx if params.penalty_last_n < 0 else params.penalty_last_n
        penalties = (params.repeat_penalty, params.frequency_penalty, params.presence_penalty)
        links.append(("penalties", (n_vocab, last_n, *penalties)))
    if params.temperature <= 0.0:
        links.append(("greedy", ()))
        return links
    if params.top_k > 0:
        links.append(("top_k", (params.top_k,)))
    if params.top_p < 1.0:
        links.append(("top_p", (params.top_p, 1)))
    if params.min_p > 0.0:
        links.append(("min_p", (params.min_p, 1)))
    links.append(("temp", (params.temperature,)))
    links.append(("dist", (seed & 0xFFFFFFFF,)))
    return links


class LlamaSampler:
    """A llama.cpp sampler chain for one sequence (implements the ``Sampler`` protocol).

    Use from the engine thread only: ``sample`` reads the context's logits of the last decode.
    """

    __slots__ = ("_chain", "_ctx", "kinds")

    def __init__(
        self, ctx: int, n_vocab: int, n_ctx: int, params: SamplingParams, seed: int
    ) -> None:
        self._ctx = ctx
        self._chain: _lib.SamplerHandle | None = _lib.sampler_chain()
        links = _links(params, n_vocab, n_ctx, seed)
        self.kinds = tuple(kind for kind, _ in links)  # for logs and tests
        try:
            for kind, args in links:
                _lib.sampler_add(self._chain, _lib.sampler_make(kind, *args))
        except Exception:
            self.close()
            raise

    def sample(self, batch_index: int) -> int:
        """Sample from the logits of batch token ``batch_index`` and accept the result."""
        chain = self._chain
        if chain is None:  # a NULL chain would crash the process
            raise RuntimeError("sampler is closed")
        return int(_lib.raw_sampler_sample(chain, self._ctx, batch_index))

    def accept(self, token: int) -> None:
        """Feed a token (e.g. from the prompt) into the penalty history."""
        if self._chain is None:
            raise RuntimeError("sampler is closed")
        _lib.raw_sampler_accept(self._chain, token)

    def close(self) -> None:
        """Free the native chain (and the samplers it owns). Idempotent."""
        if self._chain is not None:
            _lib.sampler_free(self._chain)
            self._chain = None
