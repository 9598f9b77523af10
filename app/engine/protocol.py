"""The engine as the serving layer sees it: a small typed Protocol.

The HTTP layer is tested against a fake that implements this; the real implementation is
``app.engine.service.LlamaEngine``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from app.engine.types import EngineHealth, EngineStats, GenerationRequest, ModelInfo, TokenEvent


class Engine(Protocol):
    """Submit generations, stream their token events, abort them, and report state."""

    async def start(self) -> None:
        """Load the model and start the engine thread (returns when ready or failed)."""
        ...

    async def stop(self) -> None:
        """Abort everything, stop the engine thread and free the model."""
        ...

    def submit(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        """Queue a request and return its event stream. Call from the event loop thread.

        Raises at once, before any work: ``ContextLengthExceeded`` (prompt does not fit a
        slot), ``Overloaded`` (queue full), ``InvalidRequest``, ``EngineNotReady`` and
        ``EngineDead``. The stream ends after the event with ``finish_reason`` set.
        Closing the stream early (``aclose``) does not abort: callers abort explicitly.
        """
        ...

    def abort(self, request_id: str) -> None:
        """End a request at the next step, queued or running; its stream gets CANCELLED.

        Unknown or finished ids are ignored. Thread-safe and non-blocking.
        """
        ...

    def count_tokens(self, text: str, *, add_special: bool = True) -> int:
        """Number of tokens ``text`` tokenizes to (thread-safe, no decode)."""
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
