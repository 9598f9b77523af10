"""Server-Sent Events framing, in one place.

A stream is an async iterator of chunks: pydantic models become ``data: <json>`` events,
strings become ``data: <text>`` events (text with newlines spans several ``data:`` lines,
which an EventSource parser joins back with ``\\n``). A normal end adds ``data: [DONE]``.
An error after the stream started becomes one final ``data: {"error": {...}}`` event, and
the stream closes without ``[DONE]``. Keep-alive comments flow every ``keepalive_s``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import anyio
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from app.api.errors import error_body
from app.engine.errors import EngineError

logger = logging.getLogger(__name__)

SEP = "\n"
DONE = "[DONE]"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

Chunk = BaseModel | str


def event(chunk: Chunk) -> ServerSentEvent | None:
    """The SSE event of one chunk; None for an empty text piece (it would dispatch nothing)."""
    if isinstance(chunk, str):
        return ServerSentEvent(data=chunk, sep=SEP) if chunk else None
    return ServerSentEvent(data=chunk.model_dump_json(), sep=SEP)


ErrorData = Callable[[BaseException], str]
"""The ``data`` of the error event that ends a failed stream (OpenAI's body by default)."""


def openai_error_data(exc: BaseException) -> str:
    """OpenAI's error body as JSON."""
    return error_body(exc).model_dump_json()


def error_event(exc: BaseException, error_data: ErrorData = openai_error_data) -> ServerSentEvent:
    """The final event of a stream that failed after it started."""
    return ServerSentEvent(data=error_data(exc), sep=SEP)


async def frame(
    chunks: AsyncIterator[Chunk],
    *,
    done: str | None = DONE,
    error_data: ErrorData = openai_error_data,
) -> AsyncIterator[ServerSentEvent]:
    """SSE events for ``chunks``, then ``done`` (unless None) or one error event."""
    try:
        async for chunk in chunks:
            sse = event(chunk)
            if sse is not None:
                yield sse
    except EngineError as exc:  # the 200 already went out: report in-band, then close
        logger.info("stream ended with %s: %s", type(exc).__name__, exc.message)
        yield error_event(exc, error_data)
        return
    except Exception as exc:
        logger.error("stream failed", exc_info=exc)
        yield error_event(exc, error_data)
        return
    if done is not None:
        yield ServerSentEvent(data=done, sep=SEP)


class StreamResponse(EventSourceResponse):
    """An SSE response that always closes its chunk iterator (so the engine request ends)."""

    def __init__(
        self,
        chunks: AsyncIterator[Chunk],
        *,
        keepalive_s: float,
        done: str | None = DONE,
        error_data: ErrorData = openai_error_data,
    ) -> None:
        events = frame(chunks, done=done, error_data=error_data)
        super().__init__(events, headers=SSE_HEADERS, ping=keepalive_s, sep=SEP)
        self._chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await close_iterators(self.body_iterator, self._chunks)


async def close_iterators(*iterators: object) -> None:
    """Close async iterators now, even while the task is being cancelled (client gone).

    Shielded, so the chunk generators' finally blocks (engine.abort) run now, not at GC.
    """
    with anyio.CancelScope(shield=True):
        for iterator in iterators:
            aclose = getattr(iterator, "aclose", None)
            if aclose is None:
                continue
            try:
                await aclose()
            except RuntimeError as exc:  # e.g. "already running": nothing to close
                logger.debug("stream iterator not closed: %s", exc)
