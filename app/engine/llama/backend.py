"""``LlamaBackend``: one loaded model plus one llama context with ``n_slots`` sequences.

Implements ``app.engine.backend.ModelBackend``. The engine thread owns it: ``decode``,
``new_sampler``, ``clear_seq`` and ``kv_cells_used`` run there only. ``tokenize``,
``token_to_bytes``, ``special_piece``, ``detokenize``, ``is_eog`` and ``info`` only read the
(immutable) vocabulary and are safe from any thread; ``new_embedder`` makes a second context
that its own thread owns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from app.engine.backend import BatchToken, DecodeError
from app.engine.llama import _lib
from app.engine.llama.embeddings import LlamaEmbedder, resolve_pooling
from app.engine.llama.grammar import GrammarCache
from app.engine.llama.grammar_state import GrammarState
from app.engine.llama.sampler import Candidates, LlamaSampler
from app.engine.llama.threads import ThreadGovernor
from app.engine.types import AdapterSet, Grammar, ModelInfo, SamplingParams

logger = logging.getLogger(__name__)

_DECODE_ERRORS = {
    1: "no KV cache slot for the batch (a sequence's context is full)",
    2: "decode aborted",
    -1: "invalid batch",
}


class LlamaBackend:
    """A model and its context; see ``app.engine.llama.load_backend`` to make one."""

    def __init__(
        self,
        *,
        model: int,
        ctx: int,
        n_slots: int,
        n_ctx_slot: int,
        n_batch: int,
        adapters: Sequence[_lib.AdapterHandle] = (),
        governor: ThreadGovernor | None = None,
    ) -> None:
        self._model: int | None = model
        self._ctx: int | None = ctx
        self._n_slots = n_slots
        self._n_ctx_slot = n_ctx_slot
        self._n_batch = n_batch
        self._vocab = _lib.model_vocab(model)
        self._n_vocab = _lib.vocab_n_tokens(self._vocab)
        self._mem = _lib.memory(ctx)
        self._trims_tail = not _lib.model_keeps_state(model)
        self._grammars = GrammarCache(self._vocab)
        self._candidates: Candidates | None = None  # made on the first constrained request
        self._info: ModelInfo | None = None
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._close_lock = threading.Lock()
        # One batch for the life of the context, refilled in place by every decode.
        self._batch: Any = _lib.batch_init(n_batch)
        b = self._batch
        self._tok, self._pos, self._out = b.token, b.pos, b.logits
        self._seq_ptrs = [b.seq_id[i] for i in range(n_batch)]
        for i in range(n_batch):
            b.n_seq_id[i] = 1
        self._raw_decode = _lib.raw_decode
        self._adapters = list(adapters)  # LoRA handles by adapter id (freed with the model)
        self._adapter_set: AdapterSet = ()
        # Decode threads follow the neighbours' CPU use (None: the context's threads, fixed).
        self._governor = governor if governor is not None and governor.adaptive else None

    # --- facts ---------------------------------------------------------------------------
    @property
    def n_slots(self) -> int:
        return self._n_slots

    @property
    def n_ctx_slot(self) -> int:
        """KV cells available to each sequence (llama.cpp's real per-sequence context)."""
        return self._n_ctx_slot

    @property
    def n_batch(self) -> int:
        """Max tokens one ``decode`` call may take."""
        return self._n_batch

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    def set_info(self, info: ModelInfo) -> None:
        """Attach the ModelInfo the loader built (once, before the backend is handed out)."""
        self._info = info

    def info(self) -> ModelInfo:
        """Facts about the loaded model and where it runs."""
        if self._info is None:
            raise RuntimeError("model info is not set")
        return self._info

    # --- vocabulary (any thread) ---------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        """Tokenize; with ``parse_special``, ``<|im_start|>`` becomes its control token."""
        return _lib.tokenize(self._vocab, text.encode("utf-8"), add_special, parse_special)

    def token_to_bytes(self, token: int) -> bytes:
        """Raw bytes of one token's piece; control tokens give b"" (special=False)."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = _lib.token_piece(self._vocab, token)
            self._pieces[token] = piece
        return piece

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, ``<|im_end|>``, ...)."""
        eog = self._eog.get(token)
        if eog is None:
            eog = _lib.vocab_is_eog(self._vocab, token)
            self._eog[token] = eog
        return eog

    def special_piece(self, token: int) -> bytes:
        """Raw bytes of one token's piece with control tokens rendered (``<|im_end|>``)."""
        return _lib.token_piece(self._vocab, token, special=True)

    def detokenize(self, tokens: Sequence[int]) -> str:
        """llama.cpp's inverse of ``tokenize`` (control tokens rendered)."""
        return _lib.detokenize(self._vocab, list(tokens)).decode("utf-8", errors="replace")

    def new_embedder(
        self, *, pooling: str, n_ctx: int, n_seq_max: int, n_threads: int
    ) -> LlamaEmbedder:
        """A pooled embeddings context on this model; the caller closes it before ``close``."""
        if self._model is None:
            raise RuntimeError("backend is closed")
        info = self.info()
        pooling = resolve_pooling(pooling, info.metadata, info.architecture)
        return LlamaEmbedder(
            self._model, pooling=pooling, n_ctx=n_ctx, n_seq_max=n_seq_max, n_threads=n_threads
        )

    # --- engine thread -------------------------------------------------------------------
    def decode(self, batch: Sequence[BatchToken]) -> None:
        """One llama_decode over ``batch``; raises DecodeError on a non-zero return."""
        n = len(batch)
        ctx = self._ctx
        if n == 0:
            return
        if ctx is None:
            raise RuntimeError("backend is closed")
        if n > self._n_batch:
            raise DecodeError(-1, f"batch of {n} tokens is larger than n_batch={self._n_batch}")
        tok, pos, out, seqs = self._tok, self._pos, self._out, self._seq_ptrs
        for i, t in enumerate(batch):
            tok[i] = t.token
            pos[i] = t.pos
            seqs[i][0] = t.seq_id
            out[i] = t.logits
        self._batch.n_tokens = n
        governor = self._governor
        if governor is not None:
            threads = governor.poll()
            if threads is not None:
                _lib.set_n_threads(ctx, threads, threads)
        rc = self._raw_decode(ctx, self._batch)
        if rc != 0:
            raise self._decode_error(int(rc), n)

    @property
    def decode_threads(self) -> int | None:
        """The threads decodes use now when they follow the machine's load, else None."""
        return self._governor.threads if self._governor is not None else None

    def set_adapters(self, adapters: AdapterSet) -> None:
        """Apply exactly these LoRA adapters (id, scale) to the following decodes."""
        if adapters == self._adapter_set:
            return
        ctx = self._open_ctx()
        handles = [self._adapters[i] for i, _ in adapters]
        _lib.set_adapters_lora(ctx, handles, [scale for _, scale in adapters])
        self._adapter_set = adapters

    def _decode_error(self, rc: int, n: int) -> DecodeError:
        what = _DECODE_ERRORS.get(rc, "fatal error in llama_decode")
        native = "; ".join(_lib.take_native_problems())
        detail = f" (llama.cpp: {native})" if native else ""
        return DecodeError(rc, f"llama_decode failed with {rc} on {n} tokens: {what}{detail}")

    def check_grammar(self, grammar: Grammar) -> None:
        """Compile ``grammar`` (cached); raises InvalidRequest when it is not valid. Thread-safe."""
        self._grammars.check(grammar)

    def new_sampler(self, params: SamplingParams, seed: int) -> LlamaSampler:
        """A sampler chain for one sequence (the caller closes it)."""
        ctx = self._ctx
        if ctx is None:
            raise RuntimeError("backend is closed")
        grammar = self._grammar_state(params.grammar)
        special = grammar is not None or params.logprobs is not None
        if special and self._candidates is None:
            self._candidates = Candidates(self._n_vocab)
        return LlamaSampler(
            ctx,
            self._n_vocab,
            self._n_ctx_slot,
            params,
            seed,
            grammar=grammar,
            candidates=self._candidates,
            piece=self.token_to_bytes,
        )

    def _grammar_state(self, grammar: Grammar | None) -> GrammarState | None:
        if grammar is None:
            return None
        vocab = self._vocab
        return GrammarState(
            lambda: self._grammars.new_constraint(grammar),
            grammar.trigger,
            self.token_to_bytes,
            lambda text: _lib.tokenize(vocab, text, False),
        )

    def clear_seq(self, seq_id: int, start_pos: int = 0) -> None:
        """Drop the KV cells of ``seq_id`` at positions >= ``start_pos``."""
        self._require_open()
        if not _lib.memory_seq_rm(self._mem, seq_id, start_pos, -1):
            raise RuntimeError(f"could not remove positions >= {start_pos} of sequence {seq_id}")

    def save_seq(self, seq_id: int) -> bytes:
        """The KV state of ``seq_id`` (its cells' keys and values), to restore later."""
        return _lib.state_seq_get(self._open_ctx(), seq_id)

    def load_seq(self, seq_id: int, data: bytes) -> None:
        """Replace the cells of ``seq_id`` with a state from ``save_seq``."""
        ctx = self._open_ctx()
        _lib.memory_seq_rm(self._mem, seq_id, 0, -1)
        _lib.state_seq_set(ctx, seq_id, data)

    def seq_pos_range(self, seq_id: int) -> tuple[int, int]:
        """(smallest, largest) position cached for ``seq_id``; (-1, -1) when empty."""
        self._require_open()
        return _lib.memory_seq_pos_range(self._mem, seq_id)

    @property
    def trims_tail(self) -> bool:
        """Whether a tail of a sequence's cells can be dropped (not recurrent or hybrid)."""
        return self._trims_tail

    def kv_cells_used(self) -> int:
        """KV cells holding data, summed over sequences (0 once closed)."""
        if self._ctx is None:
            return 0
        used = 0
        for seq in range(self._n_slots):
            lo, hi = _lib.memory_seq_pos_range(self._mem, seq)
            if hi >= 0:
                used += hi - lo + 1
        return used

    def _open_ctx(self) -> int:
        if self._ctx is None:
            raise RuntimeError("backend is closed")
        return self._ctx

    def _require_open(self) -> None:
        # Native calls on freed handles would crash the process instead of raising.
        if self._ctx is None:
            raise RuntimeError("backend is closed")

    def close(self) -> None:
        """Free the batch, the context and the model. Idempotent.

        Samplers are closed by their owners (the scheduler) before this.
        """
        with self._close_lock:
            self._grammars.close()
            if self._batch is not None:
                _lib.batch_free(self._batch)
                self._batch = None
            if self._ctx is not None:
                _lib.context_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                _lib.model_free(self._model)
                self._model = None
