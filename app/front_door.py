"""The front door: uvicorn's httptools protocol with the limits it lacks.

uvicorn bounds headers only for h11 (``h11_max_incomplete_event_size``); with httptools a
client could send headers without end (four 64 MB headers once cost 262 MB) and open
sockets that never send a request, or stop halfway through one, stay open forever (the
keep-alive timeout only starts after a first response). ``guarded_protocol`` adds:

- a request-head cap: more than ``max_header_bytes`` of request line and headers gets a
  431 and the connection is closed, before the parser has buffered much more than that;
- a head timeout: a connection must deliver a complete request line and headers within
  ``head_timeout_s`` of opening (or of the previous request's end) or it is closed;
- a body timeout: a request body that stalls for ``body_timeout_s`` closes the connection
  (the route sees the client disconnect).

The cap on open connections is uvicorn's own ``limit_concurrency`` (a 503 beyond it).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

HEADER_OVERHEAD = 4  # ": " and CRLF around each header


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a request-head cap (431) and head and body timeouts."""

    max_header_bytes = 65_536
    head_timeout_s = 10.0
    body_timeout_s = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._refused = False
        self._head_open = True  # waiting for a request line and headers
        self._fed = 0  # bytes fed while the head was open (bounds the parser's buffering)
        self._head = 0  # exact bytes of the request line and headers
        self._timer: asyncio.TimerHandle | None = None
        self._arm(self.head_timeout_s, "no complete request head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._head_open and not self.transport.is_closing():
            self._fed += len(data)
            if self._fed > self.max_header_bytes:
                self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._fed = self._head = 0
        self._arm(self.head_timeout_s, "no complete request head")

    def on_url(self, url: bytes) -> None:
        self._head += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + HEADER_OVERHEAD
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        if self._head > self.max_header_bytes:
            self._refuse_head()
            return
        self._arm(self.body_timeout_s, "the request body stalled")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._arm(self.body_timeout_s, "the request body stalled")
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()  # the keep-alive timeout takes over after the response
        super().on_message_complete()
        self._head_open = False  # until the next request begins

    def _arm(self, seconds: float, why: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expire, why)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, why: str) -> None:
        self._timer = None
        if not self.transport.is_closing():
            logger.info("closing a connection from %s: %s", _peer(self.client), why)
            self.transport.close()

    def _refuse_head(self) -> None:
        """Answer 431 and close: the request line and headers are over the cap."""
        self._refused = True
        self._disarm()
        message = f"Request header fields larger than {self.max_header_bytes} bytes."
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            + f"content-length: {len(message)}\r\n".encode("ascii")
            + b"connection: close\r\n\r\n"
            + message.encode("ascii")
        )
        self.transport.close()
        logger.info("refused a request head over %d bytes (431)", self.max_header_bytes)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


def guarded_protocol(
    *, max_header_bytes: int, head_timeout_s: float, body_timeout_s: float
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with these limits."""
    return type(
        "GuardedHttpTools",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "head_timeout_s": head_timeout_s,
            "body_timeout_s": body_timeout_s,
        },
    )
