"""Engine output -> Anthropic's stream events and its ``message`` object.

A stream is ``message_start`` (usage with the prompt's tokens), then content blocks, each
``content_block_start``, deltas (``thinking_delta`` and a closing ``signature_delta`` for
reasoning, ``text_delta`` for text, one ``input_json_delta`` holding a tool call's whole
input) and ``content_block_stop``; a ``ping`` after the first block starts; then
``message_delta`` (stop reason, final usage) and ``message_stop``. Blocks open when their
kind of output comes, so a reply that is only tool calls has only ``tool_use`` blocks, and
the reasoning (which the model writes first) is the first block.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from app.errors import GenerationFailed
from app.schemas.anthropic import (
    ContentBlock,
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    InputJsonDelta,
    Message,
    MessageDelta,
    MessageDeltaEvent,
    MessageStartEvent,
    MessageStopEvent,
    PingEvent,
    SignatureDelta,
    StreamEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
)
from app.serving.anthropic.convert import stop_reason, wire_usage
from app.serving.anthropic.plan import MessagesPlan
from app.serving.generation import Finished, collect
from app.serving.reasoning import Reasoning
from app.serving.render import HOLE, JsonTemplate, NamedEvent
from app.serving.tools import ParsedCall, call_message_parts, split_tool_calls

logger = logging.getLogger(__name__)

TOOL_ID_PREFIX = "toolu_"


def named(event: StreamEvent) -> NamedEvent:
    """The event as an SSE chunk named by its type (``event: message_start``...)."""
    return NamedEvent(event.type, event)


def tool_use_block(call: ParsedCall) -> ToolUseBlock:
    """A parsed call as a ``tool_use`` block; input that is no JSON object becomes ``{}``."""
    try:
        data: Any = json.loads(call.arguments)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        logger.warning("tool call %s: its arguments are not a JSON object", call.name)
        data = {}
    return ToolUseBlock(
        id=TOOL_ID_PREFIX + call.id.removeprefix("call_"), name=call.name, input=data
    )


def signature(thinking: str) -> str:
    """A thinking block's ``signature``: a stable hash of its text (clients send the block
    back with it; nothing is encrypted, and this server does not check it)."""
    return hashlib.sha256(thinking.encode()).hexdigest()


def thinking_block(thinking: str) -> ThinkingBlock:
    """The reasoning as a ``thinking`` block, signed."""
    return ThinkingBlock(thinking=thinking, signature=signature(thinking))


def start_event(plan: MessagesPlan) -> MessageStartEvent:
    """``message_start``: the message with no content yet, and the prompt's tokens."""
    usage = Usage(input_tokens=plan.prompt_tokens, output_tokens=0)
    return MessageStartEvent(
        message=Message(id=plan.message_id, content=[], model=plan.model, usage=usage)
    )


def end_events(finished: Finished) -> list[NamedEvent]:
    """``message_delta`` (why it stopped, the final usage) and ``message_stop``."""
    delta = MessageDelta(stop_reason=stop_reason(finished), stop_sequence=finished.stop_sequence)
    return [
        named(MessageDeltaEvent(delta=delta, usage=wire_usage(finished.usage))),
        named(MessageStopEvent()),
    ]


class BlockWriter:
    """Numbers the content blocks of a stream and opens and closes them around deltas."""

    def __init__(self) -> None:
        self.index = 0
        self._kind: str | None = None  # the open block's kind: "text" or "thinking"
        self._delta: JsonTemplate | None = None  # the open block's delta template
        self._thought: list[str] = []  # the open thinking block's text (for its signature)
        self._pinged = False

    def text(self, piece: str) -> list[NamedEvent]:
        """Events for a text piece (opening a text block first if none is open)."""
        events = self._ensure("text", TextBlock(text=""), TextDelta(text=HOLE))
        return [*events, self._fill(piece)]

    def thinking(self, piece: str) -> list[NamedEvent]:
        """Events for a piece of reasoning (opening a thinking block first if none is open)."""
        block = ThinkingBlock(thinking="", signature="")
        events = self._ensure("thinking", block, ThinkingDelta(thinking=HOLE))
        self._thought.append(piece)
        return [*events, self._fill(piece)]

    def tool_use(self, call: ParsedCall) -> list[NamedEvent]:
        """Events for a whole tool call: its block, its input as one delta, its end."""
        events = self.close()
        block = tool_use_block(call)
        events += self._start(block.model_copy(update={"input": {}}))
        partial = json.dumps(block.input, ensure_ascii=False)
        delta = InputJsonDelta(partial_json=partial)
        events.append(named(ContentBlockDeltaEvent(index=self.index, delta=delta)))
        events.append(named(ContentBlockStopEvent(index=self.index)))
        self.index += 1
        return events

    def close(self) -> list[NamedEvent]:
        """End the open text or thinking block, if any (a thinking block gets its
        ``signature_delta`` first)."""
        if self._kind is None:
            return []
        events = []
        if self._kind == "thinking":
            sign = SignatureDelta(signature=signature("".join(self._thought)))
            events.append(named(ContentBlockDeltaEvent(index=self.index, delta=sign)))
        events.append(named(ContentBlockStopEvent(index=self.index)))
        self._kind, self._delta, self._thought = None, None, []
        self.index += 1
        return events

    def ping(self) -> list[NamedEvent]:
        """The stream's ping, once (after the first block started, or before the end)."""
        if self._pinged:
            return []
        self._pinged = True
        return [named(PingEvent())]

    def _ensure(
        self, kind: str, block: ContentBlock, delta: TextDelta | ThinkingDelta
    ) -> list[NamedEvent]:
        """Open a block of ``kind`` unless one is open (closing a block of the other kind)."""
        if self._kind == kind:
            return []
        events = [*self.close(), *self._start(block)]
        self._kind = kind
        self._delta = JsonTemplate(ContentBlockDeltaEvent(index=self.index, delta=delta))
        return events

    def _fill(self, piece: str) -> NamedEvent:
        assert self._delta is not None
        return NamedEvent("content_block_delta", self._delta.fill(piece))

    def _start(self, block: ContentBlock) -> list[NamedEvent]:
        start = named(ContentBlockStartEvent(index=self.index, content_block=block))
        return [start, *self.ping()]


async def message_events(
    plan: MessagesPlan, stream: AsyncIterator[str | Finished]
) -> AsyncIterator[NamedEvent]:
    """Anthropic's event sequence for a reply (see the module docstring)."""
    yield named(start_event(plan))
    writer = BlockWriter()
    async for item in _items(plan, stream):
        if isinstance(item, Reasoning):
            for event in writer.thinking(item.text):
                yield event
        elif isinstance(item, str):
            for event in writer.text(item):
                yield event
        elif isinstance(item, ParsedCall):
            for event in writer.tool_use(item):
                yield event
        else:
            for event in [*writer.close(), *writer.ping(), *end_events(item)]:
                yield event
            return


def _items(plan: MessagesPlan, stream: AsyncIterator[str | Finished]) -> AsyncIterator[Any]:
    """The reply's items: reasoning split out, then tool calls."""
    items: AsyncIterator[Any] = stream
    if plan.reasoning is not None:
        items = plan.reasoning.split(items)
    if plan.tool_calls is not None:
        items = split_tool_calls(items, plan.tool_calls)
    return items


async def message_answer(plan: MessagesPlan, stream: AsyncIterator[str | Finished]) -> Message:
    """The whole reply as one ``message``: thinking, text, then tool calls."""
    content: list[ContentBlock] = []
    if plan.tool_calls is None and plan.reasoning is None:
        result = await collect(stream)
        finished = result.finished
        if result.text:
            content.append(TextBlock(text=result.text))
    else:
        parts, thought, finished = await _collect_parts(_items(plan, stream))
        text, calls = call_message_parts(parts)
        if thought:
            content.append(thinking_block(thought))
        if text:
            content.append(TextBlock(text=text))
        content += [tool_use_block(call) for call in calls]
    return Message(
        id=plan.message_id,
        content=content,
        model=plan.model,
        stop_reason=stop_reason(finished),
        stop_sequence=finished.stop_sequence,
        usage=wire_usage(finished.usage),
    )


async def _collect_parts(
    items: AsyncIterator[Any],
) -> tuple[list[str | ParsedCall], str, Finished]:
    parts: list[str | ParsedCall] = []
    thoughts: list[str] = []
    async for item in items:
        if isinstance(item, Finished):
            return parts, "".join(thoughts), item
        if isinstance(item, Reasoning):
            thoughts.append(item.text)
        else:
            parts.append(item)
    raise GenerationFailed("The engine's stream ended without a final event.")
