"""``EventStream``: the handle ``Engine.submit`` returns - a request's token events, and its end.

Closing the handle (``aclose``), however early, aborts the request in the engine unless it
already finished, so its slot is free at the next step. It is a plain object rather than
an async generator on purpose: Python skips a generator's ``finally`` when the generator is
closed before its first step, which is exactly the case of a client that leaves before the
first token. Closing twice is harmless; iterating after the final event ends the iteration.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from app.engine.types import TokenEvent

logger = logging.getLogger(__name__)


class EventStream:
    """One submitted request's events; ``aclose`` aborts it if it has not finished."""

    __slots__ = ("_abort", "_closed", "_finished", "_source", "request_id")

    def __init__(
        self,
        request_id: str,
        source: AsyncIterator[TokenEvent],
        abort: Callable[[str], None],
    ) -> None:
        self.request_id = request_id
        self._source = source
        self._abort = abort
        self._finished = False
        self._closed = False

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> TokenEvent:
        if self._finished or self._closed:
            raise StopAsyncIteration
        event = await self._source.__anext__()
        if event.finish_reason is not None:
            self._finished = True
        return event

    @property
    def finished(self) -> bool:
        """Whether the final event (with a finish reason) was read."""
        return self._finished

    async def aclose(self) -> None:
        """Abort the request unless it finished, then close the source. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._finished:
            self._abort(self.request_id)
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except RuntimeError as exc:  # e.g. "already running" in another task
                logger.debug("event source of %s not closed: %s", self.request_id, exc)
