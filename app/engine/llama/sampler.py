"""Per-sequence sampling with llama.cpp's sampler chain.

Chain order: logit bias (if any), penalties (when not neutral), then either greedy
(temperature <= 0) or top-k, top-p, min-p, temperature and a seeded ``dist`` draw. A seeded
chain is deterministic: same seed, same prompt, same logits -> same tokens.

A grammar sits outside the chain, as in llama.cpp's ``common_sampler`` (``grmr`` beside
``chain``): the chain samples from the raw logits first, and only when the grammar rejects
that token are the logits reloaded, masked by the grammar over the whole vocabulary and
sampled by the chain again (rejection sampling). The grammar is a ``Constraint``: llama.cpp's
grammar sampler (raw GBNF), whose whole-vocabulary mask costs milliseconds (every token's
text is matched against the grammar's stacks), or llguidance's matcher (JSON Schemas), whose
mask is a bitmap computed in about a tenth of a millisecond and applied with numpy. Asking
about the one drawn token is cheap for both, so the mask is only made on a rejection.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from app.engine.backend import SamplingDeadEnd
from app.engine.llama import _lib
from app.engine.llama.grammar_state import GrammarState
from app.engine.llama.logprobs import token_logprob
from app.engine.types import SamplingParams, TokenLogprob

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


class GrammarDeadEnd(SamplingDeadEnd):
    """The grammar rejects every token: generation cannot go on under it."""


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class Candidates:
    """A reusable candidate array over the whole vocabulary (engine thread only).

    One per backend: samplers run one at a time on the engine thread.
    """

    __slots__ = ("_ids", "array", "data", "n_vocab", "ref")

    def __init__(self, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        self.data = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        pointer = self.data.ctypes.data_as(ctypes.POINTER(_lib.TokenData))
        self.array = _lib.TokenDataArray(data=pointer, size=n_vocab, selected=-1, sorted=False)
        self.ref = ctypes.byref(self.array)

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

    __slots__ = (
        "_candidates",
        "_chain",
        "_ctx",
        "_grammar",
        "_n_top",
        "_piece",
        "_pre",
        "kinds",
        "last_logprob",
    )

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
        piece: Callable[[int], bytes] | None = None,
    ) -> None:
        self._ctx = ctx
        self._grammar = grammar
        self._n_top = params.logprobs
        self._piece = piece or (lambda token: b"")
        self.last_logprob: TokenLogprob | None = None
        special = grammar is not None or self._n_top is not None
        self._candidates = candidates or (Candidates(n_vocab) if special else None)
        links = _links(params, n_vocab, n_ctx, seed)
        self.kinds = tuple(kind for kind, _ in links)  # for logs and tests
        # With logprobs, bias and penalties run in their own chain: the logprobs are taken
        # between them and the rest (temperature, truncation, the draw).
        n_pre = sum(kind in ("logit_bias", "penalties") for kind in self.kinds)
        split = self._n_top is not None and n_pre > 0
        self._pre: _lib.SamplerHandle | None = _lib.sampler_chain() if split else None
        self._chain: _lib.SamplerHandle | None = _lib.sampler_chain()
        try:
            for i, (kind, args) in enumerate(links):
                chain = self._pre if split and i < n_pre else self._chain
                _lib.sampler_add(chain, _lib.sampler_make(kind, *args))
        except Exception:
            self.close()
            raise

    def sample(self, batch_index: int) -> int:
        """Sample from the logits of batch token ``batch_index`` and accept the result."""
        chain = self._chain
        if chain is None:  # a NULL chain would crash the process
            raise RuntimeError("sampler is closed")
        if self._n_top is not None:
            return self._sample_with_logprobs(chain, batch_index)
        if self._grammar is None:
            return int(_lib.raw_sampler_sample(chain, self._ctx, batch_index))
        return self._sample_constrained(chain, self._grammar, batch_index)

    def _sample_with_logprobs(self, chain: Any, batch_index: int) -> int:
        # The grammar masks the whole vocabulary first here (no rejection sampling): the
        # logprobs must come from the distribution the token is drawn from.
        cand, grammar, pre = self._candidates, self._grammar, self._pre
        assert cand is not None
        assert self._n_top is not None
        cand.load(self._ctx, batch_index)
        constrained = grammar is not None and grammar.active
        if constrained:
            assert grammar is not None
            grammar.mask(cand)
        if pre is not None:
            _lib.raw_sampler_apply(pre, cand.ref)
        logits = cand.data["logit"].copy()  # still in token id order
        _lib.raw_sampler_apply(chain, cand.ref)
        token = cand.selected()
        if constrained and grammar is not None and not grammar.allows(token):
            return self._dead_end()
        if pre is not None:
            _lib.raw_sampler_accept(pre, token)
        _lib.raw_sampler_accept(chain, token)
        if grammar is not None:
            grammar.accept(token)
        self.last_logprob = token_logprob(logits, token, self._n_top, self._piece)
        return token

    def _sample_constrained(self, chain: Any, grammar: GrammarState, batch_index: int) -> int:
        cand = self._candidates
        assert cand is not None
        cand.load(self._ctx, batch_index)
        _lib.raw_sampler_apply(chain, cand.ref)
        token = cand.selected()
        if grammar.active and not grammar.allows(token):
            cand.load(self._ctx, batch_index)
            grammar.mask(cand)
            _lib.raw_sampler_apply(chain, cand.ref)
            token = cand.selected()
            if not grammar.allows(token):
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
        if self._pre is not None:
            _lib.raw_sampler_accept(self._pre, token)
        _lib.raw_sampler_accept(self._chain, token)
        # Prompt tokens never reach the grammar: it constrains the generated text only.

    def force(self, token: int) -> None:
        """Take ``token`` as the next generated token: penalties, and the grammar if active."""
        grammar = self._grammar
        # An active grammar that cannot take the token would throw inside llama.cpp.
        if grammar is not None and grammar.active and not grammar.allows(token):
            raise RuntimeError("the grammar does not allow the forced token")
        self.accept(token)
        self.last_logprob = None
        if grammar is not None:
            grammar.accept(token)

    def close(self) -> None:
        """Free the native chain (and the samplers it owns). Idempotent."""
        if self._chain is not None:
            _lib.sampler_free(self._chain)
            self._chain = None
        if self._pre is not None:
            _lib.sampler_free(self._pre)
            self._pre = None
        if self._grammar is not None:
            self._grammar.close()
            self._grammar = None
