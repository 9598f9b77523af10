"""``LlamaEmbedder``: a second llama context on the loaded model, for pooled embeddings.

Why a second context: the generation context belongs to the engine thread and is not
thread-safe, and its KV cache holds the slots' prompts. A context created on the SAME model
(weights shared, not loaded twice) with ``embeddings=True`` and a pooling type has its own
small KV cache and compute buffers, and llama.cpp allows separate contexts to be used from
separate threads. One embeddings thread (``app.engine.embeddings``) owns this context, so
embeddings never wait for a generation step and never race it.

Every input of a call goes into ONE decode as its own sequence (positions from 0), all
tokens in one micro-batch (pooling needs each sequence whole), and the memory is cleared
after the call, so inputs never see each other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from app.engine.backend import DecodeError
from app.engine.llama import _lib
from app.errors import ModelLoadError

logger = logging.getLogger(__name__)


# GGUF ``<arch>.pooling_type`` values (llama.cpp's enum) -> our names.
_GGUF_POOLING = {"1": "mean", "2": "cls", "3": "last"}
CAUSAL_DEFAULT = "last"


def resolve_pooling(pooling: str, metadata: Mapping[str, str], architecture: str) -> str:
    """The pooling to use: as asked, or for ``auto`` the model's own (embedding models such as
    BERT/bge declare one in the GGUF), else ``last``: a causal chat model's last token is the
    one that has seen the whole input (on SmolLM2-135M it separates paraphrases from unrelated
    sentences by a wider margin than mean pooling; CLS pooling of a causal model does not)."""
    if pooling != "auto":
        return pooling
    declared = metadata.get(f"{architecture}.pooling_type", "")
    return _GGUF_POOLING.get(declared.strip(), CAUSAL_DEFAULT)


def _context_params(pooling: str, n_ctx: int, n_seq_max: int, n_threads: int) -> Any:
    params = _lib.context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = params.n_ubatch = n_ctx  # one micro-batch: pooling sees whole sequences
    params.n_seq_max = n_seq_max
    params.kv_unified = True  # inputs share the n_ctx cells: a batch holds n_ctx tokens in all
    params.n_threads = params.n_threads_batch = n_threads
    params.embeddings = True
    params.pooling_type = _lib.POOLING_TYPES[pooling]
    params.no_perf = True
    return params


class LlamaEmbedder:
    """Pooled embeddings from a context of its own; every method runs on its owner thread."""

    def __init__(
        self, model: int, *, pooling: str, n_ctx: int, n_seq_max: int, n_threads: int
    ) -> None:
        ctx = _lib.context_init(model, _context_params(pooling, n_ctx, n_seq_max, n_threads))
        if ctx is None:
            native = "; ".join(_lib.take_native_problems())
            raise ModelLoadError(f"llama.cpp could not create the embeddings context ({native}).")
        self._ctx: int | None = ctx
        self._mem = _lib.memory(ctx)
        self._n_ctx = min(_lib.n_ctx(ctx), _lib.n_batch(ctx))
        self._n_seq_max = _lib.n_seq_max(ctx)
        self._n_embd = _lib.model_n_embd(model)
        self._batch: Any = _lib.batch_init(self._n_ctx)
        self._lock = threading.Lock()  # only close() may come from another thread
        logger.info(
            "embeddings context: %s pooling, %d tokens, %d inputs per batch, %d dimensions",
            pooling,
            self._n_ctx,
            self._n_seq_max,
            self._n_embd,
        )

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def n_seq_max(self) -> int:
        return self._n_seq_max

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """One pooled vector per input (at most ``n_seq_max`` inputs, ``n_ctx`` tokens)."""
        with self._lock:
            ctx = self._ctx
            if ctx is None:
                raise RuntimeError("the embeddings context is closed")
            total = sum(len(tokens) for tokens in inputs)
            if len(inputs) > self._n_seq_max or total > self._n_ctx:
                raise DecodeError(-1, f"{len(inputs)} inputs of {total} tokens do not fit")
            self._fill(inputs)
            try:
                rc = int(_lib.raw_decode(ctx, self._batch))
                if rc != 0:
                    native = "; ".join(_lib.take_native_problems())
                    raise DecodeError(rc, f"llama_decode failed with {rc} ({native})")
                return [self._vector(ctx, seq) for seq in range(len(inputs))]
            finally:
                _lib.memory_clear(self._mem)

    def _fill(self, inputs: Sequence[Sequence[int]]) -> None:
        batch = self._batch
        i = 0
        for seq, tokens in enumerate(inputs):
            for pos, token in enumerate(tokens):
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = True
                i += 1
        batch.n_tokens = i

    def _vector(self, ctx: int, seq: int) -> list[float]:
        vector = _lib.embeddings_seq(ctx, seq, self._n_embd)
        if vector is None:
            raise DecodeError(-1, f"llama.cpp returned no pooled embedding for input {seq}")
        return vector

    def close(self) -> None:
        """Free the batch and the context (not the model). Idempotent."""
        with self._lock:
            if self._batch is not None:
                _lib.batch_free(self._batch)
                self._batch = None
            if self._ctx is not None:
                _lib.context_free(self._ctx)
                self._ctx = None
