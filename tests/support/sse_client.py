"""Read Server-Sent Events the way a browser's EventSource does (WHATWG parsing rules).

Used by the HTTP tests to check framing exactly: comments (keep-alive pings) are kept
apart, ``data:`` lines of one event are joined with ``\\n``, one space after the colon
is dropped, events with no data are not dispatched.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

_LINE = re.compile(r"\r\n|\r|\n")


@dataclass
class SSEEvent:
    """One dispatched event, and the comment lines seen since the previous one."""

    data: str
    event: str = "message"
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


class EventSourceParser:
    """Incremental parser: feed text as it arrives, collect dispatched events."""

    def __init__(self) -> None:
        self._pending = ""
        self._data: list[str] = []
        self._event = ""
        self._comments: list[str] = []
        self.comments_total = 0

    def feed(self, text: str) -> list[SSEEvent]:
        self._pending += text
        lines = _LINE.split(self._pending)
        self._pending = lines.pop()  # an unfinished line waits for more text
        events: list[SSEEvent] = []
        for line in lines:
            dispatched = self._line(line)
            if dispatched is not None:
                events.append(dispatched)
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self._comments.append(line[1:].removeprefix(" "))
            self.comments_total += 1
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent("\n".join(self._data), self._event or "message", self._comments)
        self._data, self._event, self._comments = [], "", []
        return event


def parse_sse(text: str) -> list[SSEEvent]:
    """All events of a complete SSE body."""
    return EventSourceParser().feed(text)


async def aiter_sse(response: httpx.Response) -> AsyncIterator[SSEEvent]:
    """Events of a streamed httpx response, as they arrive."""
    parser = EventSourceParser()
    async for text in response.aiter_text():
        for event in parser.feed(text):
            yield event


def data_lines(events: Iterable[SSEEvent]) -> list[str]:
    """The data of each event."""
    return [event.data for event in events]
