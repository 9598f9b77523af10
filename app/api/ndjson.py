"""Newline-delimited JSON streaming (Ollama's stream format), in one place.

Each chunk is one JSON line (``null`` fields left out, as Ollama does). An error after the
stream started becomes one final line in the route family's error shape (Ollama's
``{"error": "..."}``), then the stream ends. However the response ends, the chunk iterator
and the engine streams are closed at once, so the engine request is aborted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.api.sse import ErrorData, close_iterators
from app.errors import EngineError

logger = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


def line(chunk: BaseModel) -> bytes:
    """One NDJSON line."""
    return chunk.model_dump_json(exclude_none=True).encode() + b"\n"


async def ndjson_lines(
    chunks: AsyncIterator[BaseModel], error_data: ErrorData
) -> AsyncIterator[bytes]:
    """The lines of ``chunks``, then one error line if they fail."""
    try:
        async for chunk in chunks:
            yield line(chunk)
    except Exception as exc:
        if isinstance(exc, EngineError):
            logger.info("stream ended with %s: %s", type(exc).__name__, exc.message)
        else:
            logger.error("stream failed", exc_info=exc)
        yield error_data(exc).encode() + b"\n"


class NdjsonResponse(StreamingResponse):
    """A streamed NDJSON response that always closes its chunk iterator."""

    def __init__(
        self,
        chunks: AsyncIterator[BaseModel],
        *,
        error_data: ErrorData,
        closing: Sequence[object] = (),
    ) -> None:
        super().__init__(ndjson_lines(chunks, error_data), media_type=NDJSON)
        self._chunks = chunks
        self._closing = tuple(closing)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await close_iterators(self.body_iterator, self._chunks, *self._closing)
