"""gpt-oss Harmony: channels (analysis, commentary, final) and ``to=functions.name`` calls.

A Harmony reply is a run of messages, each ``<|channel|>name [to=functions.x]
[<|constrain|>json]<|message|>body`` ended by ``<|end|>``, ``<|call|>`` or ``<|return|>``
(and the next one opened by ``<|start|>assistant``). ``HarmonyChannels`` turns them into
reasoning (analysis), content (final, and commentary without a recipient) and call text
``to=functions.x<|message|>{...}`` that ``HarmonyFormat`` parses like any call block.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import ClassVar

from app.serving.tool_formats.base import (
    ParsedCall,
    ToolFormat,
    arguments_json,
    gbnf_literal,
    json_value_prefix,
)

MESSAGE = "<|message|>"
ENDS = ("<|end|>", "<|call|>", "<|return|>", "<|start|>")
_RECIPIENT = re.compile(r"to=functions\.([^\s<]+)")


class HarmonyFormat(ToolFormat):
    """Calls as ``to=functions.name ... <|message|>{json}``."""

    name: ClassVar[str] = "harmony"
    markers: ClassVar[tuple[str, ...]] = ("<|channel|>", "functions.")
    special_markers: ClassVar[bool] = True
    open: ClassVar[str] = "to=functions."
    close: ClassVar[str] = ""
    lazy: ClassVar[bool] = False

    def parse_block(self, block: str, names: frozenset[str]) -> list[ParsedCall] | None:
        """The call in ``name<|message|>{...}``."""
        head, sep, body = block.partition(MESSAGE)
        name = re.split(r"[\s<]", head.strip(), maxsplit=1)[0]
        arguments = arguments_json(body.strip().removesuffix("<|call|>").strip()) if sep else None
        if name not in names or arguments is None:
            return None
        return [ParsedCall(name, arguments)]

    def partial(self, block: str) -> tuple[str, str] | None:
        """Name and arguments so far, once the message began."""
        head, sep, body = block.partition(MESSAGE)
        if not sep:
            return None
        return re.split(r"[\s<]", head.strip(), maxsplit=1)[0], json_value_prefix(body.lstrip())

    def grammar_open(self) -> str:
        """A forced call is a commentary message to the function."""
        return "<|channel|>commentary to=functions."

    def call_gbnf(self, name: str, args_rule: str) -> str:
        """``name <|constrain|>json<|message|>{...}``."""
        return f"{gbnf_literal(name + ' <|constrain|>json' + MESSAGE)} {args_rule}"


class HarmonyChannels:
    """Harmony text in; ``("reasoning" | "content", text)`` pieces out (calls as content)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._kind: str | None = None  # the open message's kind; None: reading a header
        self._plain = False  # the reply is not Harmony at all: all content

    def push(self, text: str) -> Iterator[tuple[str, str]]:
        """Pieces ``text`` completes."""
        if self._plain:
            yield "content", text
            return
        self._buffer += text
        while True:
            if self._kind is None:
                if not self._header():
                    return
                continue
            at, end = min(
                ((self._buffer.find(e), e) for e in ENDS if e in self._buffer), default=(-1, "")
            )
            if at < 0:
                keep = max((_partial(self._buffer, e) for e in ENDS), default=0)
                ready, self._buffer = (
                    self._buffer[: len(self._buffer) - keep],
                    self._buffer[len(self._buffer) - keep :],
                )
                if ready:
                    yield self._kind, ready
                return
            if self._buffer[:at]:
                yield self._kind, self._buffer[:at]
            skip = len(end) if end != "<|start|>" else 0
            self._buffer, self._kind = self._buffer[at + skip :], None

    def flush(self) -> Iterator[tuple[str, str]]:
        """What is left at the end."""
        rest, self._buffer = self._buffer, ""
        if rest and (self._kind is not None or self._plain):
            yield self._kind or "content", rest

    def _header(self) -> bool:
        """Read a message header; False while it is incomplete."""
        head = self._buffer.lstrip()
        if head and not head.startswith("<|"):
            self._plain, self._kind = True, "content"
            return True
        at = head.find(MESSAGE)
        if at < 0:
            return False
        header, self._buffer = head[:at], head[at + len(MESSAGE) :]
        recipient = _RECIPIENT.search(header)
        if recipient:
            self._kind = "content"
            self._buffer = f"to=functions.{recipient.group(1)}{MESSAGE}{self._buffer}"
        else:
            self._kind = "reasoning" if "analysis" in header else "content"
        return True


def _partial(text: str, mark: str) -> int:
    for n in range(min(len(text), len(mark) - 1), 0, -1):
        if mark.startswith(text[-n:]):
            return n
    return 0
