"""Server-Sent Events framing and the streaming response, in one place.

A stream is an async iterator of chunks: pydantic models and pre-rendered JSON
(``RawJson``) become ``data: <json>`` events, strings become ``data: <text>`` events (text
with newlines spans several ``data:`` lines, which an EventSource parser joins back with
``\\n``); a ``NamedEvent`` (``app.serving.render``) wraps one of those with an
``event: <name>`` line (APIs such as OpenAI's Responses and Anthropic's Messages name every
event). A normal end adds ``data: [DONE]`` (unless the family's streams have no end marker).
An error after the stream started becomes one final event in the family's error shape
(``data: {"error": {...}}`` for OpenAI's; named when the family names its error event, as
Anthropic's ``event: error``), and the stream closes without ``[DONE]`` -- except when the
server ends it while shutting down: then ``[DONE]`` follows the error event.
Keep-alive comments flow while a stream has been quiet for ``keepalive_s``.

Why not sse-starlette's ``EventSourceResponse``: it opens an anyio cancel scope (its send
timeout) for every event and builds each event through several string passes. At one
event per token for every stream, that work runs on the event loop thread, which on a
small machine shares the CPU with llama.cpp's decode threads: every microsecond here is
taken from the model. This response pays its per-request setup once (a task group with
one watcher task for disconnects and keep-alives) and per event does one ``send`` of
bytes framed here. It also leaves server shutdown to the server: uvicorn waits for
running responses, so a drain can let streams finish.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from time import monotonic

import anyio
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.errors import family_error_data
from app.api.family import DEFAULT_FAMILY
from app.errors import EngineCrashed, EngineError, RequestCancelled
from app.serving.render import NamedEvent as NamedEvent  # framed here; re-exported
from app.serving.render import RawJson

logger = logging.getLogger(__name__)

DONE = "[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"
PING_EVENT = b": ping\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

Data = BaseModel | RawJson | str
Chunk = Data | NamedEvent


def frame_json(json_text: str) -> bytes:
    """One event whose data is a JSON document (JSON text has no raw newlines)."""
    return b"data: " + json_text.encode("utf-8") + b"\n\n"


def frame_text(text: str) -> bytes:
    """One event whose data is ``text``; each line of it becomes one ``data:`` field."""
    if "\n" not in text and "\r" not in text:
        return b"data: " + text.encode("utf-8") + b"\n\n"
    # Any of CRLF, LF, CR ends a line in SSE; a parser joins data fields with LF.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "".join(f"data: {line}\n" for line in lines).encode("utf-8") + b"\n"


def encode(chunk: Chunk) -> bytes | None:
    """The SSE bytes of one chunk; None for an empty text piece (it would dispatch nothing)."""
    if isinstance(chunk, NamedEvent):
        data = encode(chunk.data)
        return b"event: " + chunk.name.encode("utf-8") + b"\n" + (data or b"data: \n\n")
    if isinstance(chunk, RawJson):
        return frame_json(chunk)
    if isinstance(chunk, str):
        return frame_text(chunk) if chunk else None
    return frame_json(chunk.model_dump_json())


ErrorData = Callable[[BaseException], str]
"""The ``data`` of the error event that ends a failed stream (its route family's error shape)."""

openai_error_data: ErrorData = family_error_data(DEFAULT_FAMILY)
"""OpenAI's error body as JSON."""


def error_event(
    exc: BaseException, error_data: ErrorData = openai_error_data, name: str | None = None
) -> bytes:
    """The final event of a stream that failed after it started (named ``name``, if set)."""
    data = frame_json(error_data(exc))
    return data if name is None else b"event: " + name.encode("utf-8") + b"\n" + data


async def frame(
    chunks: AsyncIterator[Chunk],
    *,
    done: str | None = DONE,
    error_data: ErrorData = openai_error_data,
    error_name: str | None = None,
) -> AsyncIterator[bytes]:
    """SSE bytes for ``chunks``, then ``done`` (unless None) or one error event (with the
    event name ``error_name``, if set)."""
    try:
        async for chunk in chunks:
            data = encode(chunk)
            if data is not None:
                yield data
    except (RequestCancelled, EngineCrashed) as exc:  # shutdown, or the engine process died
        # An end by the server: the error says why the reply is cut, then the stream ends
        # as a complete one, so clients waiting for the end marker close cleanly.
        logger.info("stream ended by the server: %s", exc.message)
        yield error_event(exc, error_data, error_name)
        if done is not None:
            yield done_event(done)
        return
    except EngineError as exc:  # the 200 already went out: report in-band, then close
        logger.info("stream ended with %s: %s", type(exc).__name__, exc.message)
        yield error_event(exc, error_data, error_name)
        return
    except Exception as exc:
        logger.error("stream failed", exc_info=exc)
        yield error_event(exc, error_data, error_name)
        return
    if done is not None:
        yield done_event(done)


def done_event(done: str) -> bytes:
    """The end-of-stream event (``data: [DONE]`` for OpenAI streams)."""
    return DONE_EVENT if done == DONE else frame_text(done)


class StreamResponse(Response):
    """An ASGI ``text/event-stream`` response over a chunk iterator.

    It always closes its iterators and the engine streams in ``closing`` when it ends, however
    it ends (so the engine request is aborted at once when the client goes away), sends a
    keep-alive comment when the stream has been quiet for ``keepalive_s``, and stops as soon
    as the client disconnects.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        chunks: AsyncIterator[Chunk],
        *,
        keepalive_s: float,
        headers: Mapping[str, str] | None = None,
        done: str | None = DONE,
        error_data: ErrorData = openai_error_data,
        error_name: str | None = None,
        closing: Sequence[object] = (),
    ) -> None:
        # Like starlette's StreamingResponse: no body, so no Content-Length header.
        self.status_code = 200
        self.background: BackgroundTask | None = None
        self.init_headers({**SSE_HEADERS, **(headers or {})})
        self._chunks = chunks
        self._closing = tuple(closing)
        self._events = frame(chunks, done=done, error_data=error_data, error_name=error_name)
        self._keepalive_s = keepalive_s
        self._last_send = monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            await send(start)
            async with anyio.create_task_group() as group:
                group.start_soon(self._watch, receive, send, group.cancel_scope)
                await self._pump(send)
                group.cancel_scope.cancel()
            if self.background is not None:
                await self.background()
        finally:
            await close_iterators(self._events, self._chunks, *self._closing)

    async def _pump(self, send: Send) -> None:
        async for data in self._events:
            await send({"type": "http.response.body", "body": data, "more_body": True})
            self._last_send = monotonic()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch(self, receive: Receive, send: Send, scope: anyio.CancelScope) -> None:
        """Keep-alive comments while quiet; cancel the stream when the client leaves."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._pings, send)
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
            group.cancel_scope.cancel()
        scope.cancel()

    async def _pings(self, send: Send) -> None:
        interval = self._keepalive_s
        while True:
            due = self._last_send + interval - monotonic()
            if due > 0:
                await anyio.sleep(due)
                continue
            await send({"type": "http.response.body", "body": PING_EVENT, "more_body": True})
            self._last_send = monotonic()


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
