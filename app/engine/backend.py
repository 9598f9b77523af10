"""What the scheduler needs from a loaded model and its context.

The real implementation lives in ``app/engine/llama/`` (the only place that imports
llama_cpp); unit tests drive the scheduler with a fake. Every method except ``tokenize``,
``token_to_bytes``, ``special_piece``, ``detokenize``, ``is_eog``, ``check_grammar``,
``info`` and ``new_embedder`` is called only from the engine thread that owns the llama
context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from app.engine.types import AdapterSet, Grammar, ModelInfo, SamplingParams, TokenLogprob


class SamplingDeadEnd(RuntimeError):
    """The sampler's constraints (a grammar) allow no next token: the request cannot go on."""


class DecodeError(RuntimeError):
    """llama_decode failed for a batch (e.g. no KV slot found); carries the return code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class BatchToken:
    """One token of a decode batch: its position in its sequence and whether to compute logits."""

    token: int
    pos: int
    seq_id: int
    logits: bool


class Sampler(Protocol):
    """A per-sequence sampler chain (penalties, logit bias, top-k/p, min-p, temperature, dist)."""

    last_logprob: TokenLogprob | None
    """The logprobs of the token ``sample`` returned last, when the request asked for them."""

    def sample(self, batch_index: int) -> int:
        """Sample from the logits of token ``batch_index`` of the last decode batch; accept it.

        ``batch_index`` is the token's index in the batch passed to ``decode`` (as in
        llama_sampler_sample / llama_get_logits_ith); that token must have had ``logits=True``.
        """
        ...

    def accept(self, token: int) -> None:
        """Feed a token (e.g. a prompt token) into penalty history without sampling."""
        ...

    def force(self, token: int) -> None:
        """Take ``token`` as if sampled (penalty history and grammar), e.g. a budget's close."""
        ...

    def close(self) -> None:
        """Free the native sampler."""
        ...


class Embedder(Protocol):
    """A second llama context on the loaded model with pooled embeddings output.

    llama.cpp contexts are not thread-safe, but separate contexts on one model are: the
    embeddings context is used by ONE thread of its own (``app.engine.embeddings``), never
    by the engine thread that decodes generations, so neither waits for the other.
    """

    @property
    def n_ctx(self) -> int:
        """Most tokens one ``embed`` call takes, summed over its inputs (so the longest input)."""
        ...

    @property
    def n_seq_max(self) -> int:
        """Most inputs one ``embed`` call takes."""
        ...

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """One pooled (not normalised) vector per input, from one decode of them all."""
        ...

    def close(self) -> None: ...


class ModelBackend(Protocol):
    """A loaded model plus one llama context with ``n_slots`` sequences (seq ids 0..n_slots-1)."""

    @property
    def n_slots(self) -> int: ...

    @property
    def n_ctx_slot(self) -> int:
        """KV cells available to each sequence."""
        ...

    @property
    def n_batch(self) -> int:
        """Max tokens one ``decode`` call may take."""
        ...

    def info(self) -> ModelInfo: ...

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        """Tokenize; special-token text becomes control tokens if ``parse_special``.
        Thread-safe."""
        ...

    def token_to_bytes(self, token: int) -> bytes:
        """The raw bytes of one token's piece (may be part of a UTF-8 character). Thread-safe."""
        ...

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, <|im_end|>, ...). Thread-safe."""
        ...

    def special_piece(self, token: int) -> bytes:
        """The raw bytes of one token's piece, control tokens rendered. Thread-safe."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens`` (ids checked by the caller), control tokens rendered."""
        ...

    def new_embedder(self, *, pooling: str, n_ctx: int, n_seq_max: int, n_threads: int) -> Embedder:
        """A pooled embeddings context on this model (the caller closes it before ``close``)."""
        ...

    def decode(self, batch: Sequence[BatchToken]) -> None:
        """Run one llama_decode over the batch; raises DecodeError on failure."""
        ...

    def set_adapters(self, adapters: AdapterSet) -> None:
        """Apply these LoRA adapters (ids of ``info().adapters``) to the following decodes.

        Per context, as llama.cpp applies them: every sequence of a batch runs under the same
        set. The empty set is the base model.
        """
        ...

    def check_grammar(self, grammar: Grammar) -> None:
        """Compile ``grammar`` (cached); raise ``InvalidRequest`` when it is not valid.

        Thread-safe: called at submit, so a bad grammar is refused before any work.
        """
        ...

    def new_sampler(self, params: SamplingParams, seed: int) -> Sampler:
        """A sampler for one sequence, constrained by ``params.grammar`` when set."""
        ...

    def clear_seq(self, seq_id: int, start_pos: int = 0) -> None:
        """Drop the KV cells of ``seq_id`` at positions >= start_pos."""
        ...

    def save_seq(self, seq_id: int) -> bytes:
        """The KV state of ``seq_id`` as bytes (raises RuntimeError if it cannot)."""
        ...

    def load_seq(self, seq_id: int, data: bytes) -> None:
        """Replace the cells of ``seq_id`` with a state from ``save_seq`` (RuntimeError if not)."""
        ...

    @property
    def trims_tail(self) -> bool:
        """Whether ``clear_seq`` can drop a tail of a sequence's cells (not a recurrent or
        hybrid memory): speculative decoding needs it to drop rejected drafts."""
        ...

    def kv_cells_used(self) -> int:
        """KV cells holding data, summed over sequences."""
        ...

    def close(self) -> None: ...
