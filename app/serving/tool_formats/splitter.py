"""Split streamed reply text into content, call pieces and whole calls, for any format.

The splitter holds back text that may be the start of a call marker, so call markup never
reaches ``content``. Inside a call block it asks the format for the name and the argument
text known so far and yields ``CallDelta`` pieces as they grow; when the block ends it
yields the ``ParsedCall`` (whose arguments the pieces add up to). A block that is not a
valid call stays text; an unclosed block at a cut-off (``max_tokens``) is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

from app.serving.tool_formats.base import CallDelta, ParsedCall, ToolFormat, new_call_id

Item = str | ParsedCall | CallDelta


class CallSplitter:
    """Streamed text in, content pieces and calls out (see the module docstring)."""

    def __init__(self, fmt: ToolFormat, names: frozenset[str]) -> None:
        self._fmt = fmt
        self._names = names
        self._opens = tuple(m for m in (fmt.open, *fmt.extra_opens) if m)
        self._buffer = ""
        self._inside = False
        self._blank = ""  # whitespace held back: content only if more text follows
        self._call_id = ""
        self._sent = ""  # argument text already yielded as CallDelta for this block
        self._named = False  # whether this block's call was announced (its first CallDelta)
        self.n_calls = 0

    def push(self, text: str) -> Iterator[Item]:
        """Content pieces, call pieces and calls that ``text`` completes."""
        self._buffer += text
        while self._step():
            yield from self._pending
        if self._inside:
            yield from self._deltas()
            return
        keep = max(
            (_partial_suffix(self._buffer, m) for m in (*self._opens, *self._fmt.skip)), default=0
        )
        ready = self._buffer[: len(self._buffer) - keep]
        self._buffer = self._buffer[len(ready) :]
        yield from self._content(ready)

    def flush(self, *, cut: bool = False) -> Iterator[Item]:
        """What is left at the end; ``cut``: the reply hit its token cap."""
        if self._inside:
            block, self._buffer, self._inside = self._buffer, "", False
            calls = self._fmt.parse_block(block, self._names) if block.strip() else None
            if calls:
                yield from self._calls(block, calls)
                return
            self._sent, self._named = "", False
            if not cut:
                yield from self._content(self._opened + block, final=True)
            return
        rest, self._buffer = self._buffer, ""
        yield from self._content(rest, final=True)

    _pending: list[Item]
    _opened = ""

    def _step(self) -> bool:
        """Handle the next marker in the buffer; False when there is none."""
        self._pending = []
        if self._inside:
            return self._step_inside()
        found = [(self._buffer.find(m), m) for m in (*self._opens, *self._fmt.skip)]
        found = [(at, m) for at, m in found if at >= 0]
        if not found:
            return False
        at, mark = min(found, key=lambda f: (f[0], -len(f[1])))
        self._pending.extend(self._content(self._buffer[:at]))
        if mark in self._fmt.skip and mark not in self._opens:
            self._buffer = self._buffer[at + len(mark) :]
            return True
        keep = mark if mark != self._fmt.open else ""  # Llama's bare JSON: the marker is data
        self._opened = "" if keep else mark
        self._buffer = keep + self._buffer[at + len(mark) :]
        self._inside, self._call_id = True, new_call_id()
        self._sent, self._named = "", False
        return True

    def _step_inside(self) -> bool:
        close = self._fmt.close or self._fmt.open
        at = self._buffer.find(close)
        if at < 0:
            return False
        block = self._buffer[:at]
        rest = self._buffer[at + len(self._fmt.close) :]  # no close: the next open stays
        calls = self._fmt.parse_block(block, self._names)
        self._inside = False
        self._buffer = rest
        if calls:
            self._pending.extend(self._calls(block, calls))
        else:  # not a call after all: its text is content (nothing is lost)
            self._sent, self._named = "", False
            self._pending.extend(self._content(self._opened + block + self._fmt.close))
        return True

    def _deltas(self) -> Iterator[Item]:
        known = self._fmt.partial(self._buffer)
        if known is None or known[0] not in self._names:
            return
        name, arguments = known
        if not self._named:
            self._named = True
            yield CallDelta(self.n_calls, self._call_id, name, "")
        if len(arguments) > len(self._sent) and arguments.startswith(self._sent):
            yield CallDelta(self.n_calls, self._call_id, name, arguments[len(self._sent) :])
            self._sent = arguments

    def _calls(self, block: str, calls: list[ParsedCall]) -> Iterator[Item]:
        self._blank = ""
        for i, call in enumerate(calls):
            if i == 0 and self._named:
                arguments = _as_sent(call.arguments, block, self._fmt, self._sent)
                call = replace(call, id=self._call_id, arguments=arguments)
            self.n_calls += 1
            yield call
        self._sent, self._named = "", False

    def _content(self, text: str, *, final: bool = False) -> Iterator[Item]:
        # Trailing whitespace waits: it is content only if more text follows (not a call).
        if not text:
            return
        body = text.rstrip()
        if body:
            yield self._blank + body
            self._blank = ""
        self._blank += text[len(body) :]
        if final and self._blank and not self.n_calls:
            yield self._blank
            self._blank = ""


def _as_sent(arguments: str, block: str, fmt: ToolFormat, sent: str) -> str:
    """The call's arguments as the raw text its streamed pieces began, when they agree."""
    known = fmt.partial(block)
    raw = known[1].strip() if known else ""
    try:
        same = json.loads(raw) == json.loads(arguments)
    except json.JSONDecodeError:
        same = False
    return raw if same and raw.startswith(sent) else arguments


def _partial_suffix(text: str, mark: str) -> int:
    """Length of the longest end of ``text`` that starts ``mark``."""
    for n in range(min(len(text), len(mark) - 1), 0, -1):
        if mark.startswith(text[-n:]):
            return n
    return 0
