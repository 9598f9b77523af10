"""Per-sequence sampling with llama.cpp's sampler chain.

Chain order: logit bias (if any), penalties (when not neutral), then either greedy
(temperature <= 0) or top-k, top-p, min-p, temperature and a seeded ``dist`` draw. A seeded
chain is deterministic: same seed, same prompt, same logits -> same tokens.

A grammar sits outside the chain, as in llama.cpp's ``common_sampler`` (``grmr`` beside
``chain``): the chain samples from the raw logits first, and only when the grammar rejects
that token are the logits reloaded, masked by the grammar over the whole vocabulary and
sampled by the chain again (rejection sampling). Masking the whole vocabulary costs
milliseconds per token (every token's text is matched against the grammar's stacks), so
doing it only on a rejection keeps constrained decoding near full speed.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import numpy as np

from app.engine.llama import _lib
from app.engine.llama.grammar import GrammarState, SingleCandidate
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


class GrammarDeadEnd(RuntimeError):
    """The grammar rejects every token: generation cannot go on under it."""


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class Candidates:
    """A reusable candidate array over the whole vocabulary (engine thread only).

    One per backend: samplers run one at a time on the engine thread.
    """

    __slots__ = ("_ids", "array", "data", "n_vocab", "ref", "single")

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self.data = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        pointer = self.data.ctypes.data_as(ctypes.POINTER(_lib.TokenData))
        self.array = _lib.TokenDataArray(data=pointer, size=n_vocab, selected=-1, sorted=False)
        self.ref = ctypes.byref(self.array)
        self.single = SingleCandidate()

    def load(self, ctx: int, batch_index: int) -> None:
        """Fill the array with the logits of batch token ``batch_index``."""
        logits = _lib.raw_get_logits_ith(ctx, batch_index)
        self.data["id"] = self._ids
        self.data["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        array = self.array
        array.size = self.n_vocab
        array.selected = -1
        array.sorted = False

    def selected(self) -> int:
        """The token the chain picked."""
        array = self.array
        return int(array.data[array.selected].id)


class LlamaSampler:
    """A llama.cpp sampler chain for one sequence (implements the ``Sampler`` protocol).

    Use from the engine thread only: ``sample`` reads the context's logits of the last decode.
    """

    __slots__ = ("_candidates", "_chain", "_ctx", "_grammar", "kinds")

    def __init__(
        self,
        ctx: int,
        n_vocab: int,
        n_ctx: int,
        params: SamplingParams,
        seed: int,
        *,
        grammar: GrammarState | None = None,
        candidates: Candidates | None = None,
    ) -> None:
        self._ctx = ctx
        self._grammar = grammar
        self._candidates = candidates or (Candidates(n_vocab) if grammar else None)
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
        if self._grammar is None:
            return int(_lib.raw_sampler_sample(chain, self._ctx, batch_index))
        return self._sample_constrained(chain, self._grammar, batch_index)

    def _sample_constrained(self, chain: Any, grammar: GrammarState, batch_index: int) -> int:
        cand = self._candidates
        assert cand is not None
        cand.load(self._ctx, batch_index)
        _lib.raw_sampler_apply(chain, cand.ref)
        token = cand.selected()
        if grammar.active and not grammar.allows(token, cand.single.array):
            cand.load(self._ctx, batch_index)
            _lib.raw_sampler_apply(grammar.handle, cand.ref)
            _lib.raw_sampler_apply(chain, cand.ref)
            token = cand.selected()
            if not grammar.allows(token, cand.single.array):
                return self._dead_end()
        _lib.raw_sampler_accept(chain, token)
        grammar.accept(token)
        return token

    def _dead_end(self) -> int:
        # Only a hand-written GBNF grammar gets here (one that needs text no token spells).
        # Accepting a rejected token would abort the process in llama.cpp; the scheduler
        # ends this one request with an error instead.
        raise GrammarDeadEnd("the grammar allows no next token (no token spells what it needs)")

    def accept(self, token: int) -> None:
        """Feed a token (e.g. from the prompt) into the penalty history."""
        if self._chain is None:
            raise RuntimeError("sampler is closed")
        _lib.raw_sampler_accept(self._chain, token)
        # Prompt tokens never reach the grammar: it constrains the generated text only.

    def close(self) -> None:
        """Free the native chain (and the samplers it owns). Idempotent."""
        if self._chain is not None:
            _lib.sampler_free(self._chain)
            self._chain = None
        if self._grammar is not None:
            self._grammar.close()
            self._grammar = None
