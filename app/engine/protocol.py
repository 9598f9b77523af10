"""The engine as the serving layer sees it: a small typed Protocol.

The HTTP layer is tested against a fake that implements this; the real implementation is
``app.engine.service.LlamaEngine``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from app.engine.stream import EventStream
from app.engine.types import (
    Embeddings,
    EngineHealth,
    EngineStats,
    GenerationRequest,
    Grammar,
    LoraAdapter,
    ModelInfo,
)


class Engine(Protocol):
    """Submit generations, stream their token events, abort them, and report state."""

    async def start(self) -> None:
        """Load the model and start the engine thread (returns when ready or failed)."""
        ...

    async def stop(self) -> None:
        """Abort everything, stop the engine thread and free the model."""
        ...

    def submit(self, request: GenerationRequest) -> EventStream:
        """Queue a request and return its stream handle. Call from the event loop thread.

        Raises at once, before any work: ``ContextLengthExceeded`` (prompt does not fit a
        slot), ``Overloaded`` (queue full), ``InvalidRequest``, ``EngineNotReady`` and
        ``EngineDead``. The stream ends after the event with ``finish_reason`` set.
        Closing the handle (``aclose``) before that aborts the request, even when no event
        was read yet.
        """
        ...

    def check_grammar(self, grammar: Grammar) -> None:
        """Convert and compile ``grammar`` (cached); raise ``InvalidRequest`` if it is bad.

        Thread-safe, and slow for a grammar not seen before (seconds for a large one): call
        it off the event loop (``asyncio.to_thread``) before ``submit``, which then finds
        it compiled.
        """
        ...

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` with its prompt tokenized into ``prompt_tokens`` (thread-safe: call it
        from a worker thread, never the event loop). Raises what ``submit`` raises for a
        prompt it cannot take (``InvalidRequest`` for an empty or oversized one)."""
        ...

    def abort(self, request_id: str) -> None:
        """End a request at the next step, queued or running; its stream gets CANCELLED.

        Unknown or finished ids are ignored. Thread-safe and non-blocking.
        """
        ...

    def count_tokens(self, text: str, *, add_special: bool = True) -> int:
        """Number of tokens ``text`` tokenizes to (thread-safe, no decode)."""
        ...

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """Token ids of ``text``, special tokens parsed (thread-safe, no decode)."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``, control tokens rendered (raises InvalidRequest for bad ids)."""
        ...

    def token_pieces(self, tokens: Sequence[int]) -> list[bytes]:
        """Each token's raw bytes, control tokens rendered (may be part of a UTF-8 character)."""
        ...

    async def embed(self, texts: Sequence[str]) -> Embeddings:
        """Pooled, normalised embeddings of ``texts``, computed off the event loop thread.

        Raises ``InvalidRequest`` when embeddings are off or an input is empty,
        ``ContextLengthExceeded`` when an input is too long and ``Overloaded`` when full.
        """
        ...

    async def lora_adapters(
        self, scales: Mapping[int, float] | None = None
    ) -> tuple[LoraAdapter, ...]:
        """The model's LoRA adapters and the scale each gets when a request names it.

        With ``scales`` (adapter id -> scale), set those first, as llama-server's
        ``POST /lora-adapters`` does (adapters left out keep their scale). Raises
        ``InvalidRequest`` for an unknown id or a scale that is not a finite number.
        """
        ...

    def health(self) -> EngineHealth:
        """Loading, ready, dead or stopped, with a reason. Never blocks."""
        ...

    def stats(self) -> EngineStats:
        """A snapshot of slots, queue, KV usage and token totals. Never blocks."""
        ...

    def model_info(self) -> ModelInfo:
        """Facts about the loaded model (raises EngineNotReady while loading)."""
        ...
