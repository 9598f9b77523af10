"""Engine output -> Anthropic's stream events and its ``message`` object.

A stream is ``message_start`` (usage with the prompt's tokens), then content blocks, each
``content_block_start``, deltas (``text_delta`` for text, one ``input_json_delta`` holding a
tool call's whole input) and ``content_block_stop``; a ``ping`` after the first block
starts; then ``message_delta`` (stop reason, final usage) and ``message_stop``. Text blocks
open when text comes, so a reply that is only tool calls has only ``tool_use`` blocks.
"""

from __future__ import annotations

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
    StreamEvent,
    TextBlock,
    TextDelta,
    ToolUseBlock,
    Usage,
)
from app.serving.anthropic.convert import stop_reason, wire_usage
from app.serving.anthropic.plan import MessagesPlan
from app.serving.generation import Finished, collect
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
        self._text: JsonTemplate | None = None  # the open text block's delta template
        self._pinged = False

    def text(self, piece: str) -> list[NamedEvent]:
        """Events for a text piece (opening a text block first if none is open)."""
        events: list[NamedEvent] = []
        if self._text is None:
            events += self._start(TextBlock(text=""))
            delta = ContentBlockDeltaEvent(index=self.index, delta=TextDelta(text=HOLE))
            self._text = JsonTemplate(delta)
        events.append(NamedEvent("content_block_delta", self._text.fill(piece)))
        return events

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
        """End the open text block, if any."""
        if self._text is None:
            return []
        self._text = None
        stop = named(ContentBlockStopEvent(index=self.index))
        self.index += 1
        return [stop]

    def ping(self) -> list[NamedEvent]:
        """The stream's ping, once (after the first block started, or before the end)."""
        if self._pinged:
            return []
        self._pinged = True
        return [named(PingEvent())]

    def _start(self, block: ContentBlock) -> list[NamedEvent]:
        start = named(ContentBlockStartEvent(index=self.index, content_block=block))
        return [start, *self.ping()]


async def message_events(
    plan: MessagesPlan, stream: AsyncIterator[str | Finished]
) -> AsyncIterator[NamedEvent]:
    """Anthropic's event sequence for a reply (see the module docstring)."""
    yield named(start_event(plan))
    writer = BlockWriter()
    items = stream if plan.tool_calls is None else split_tool_calls(stream, plan.tool_calls)
    async for item in items:
        if isinstance(item, str):
            for event in writer.text(item):
                yield event
        elif isinstance(item, ParsedCall):
            for event in writer.tool_use(item):
                yield event
        else:
            for event in [*writer.close(), *writer.ping(), *end_events(item)]:
                yield event
            return


async def message_answer(plan: MessagesPlan, stream: AsyncIterator[str | Finished]) -> Message:
    """The whole reply as one ``message``."""
    content: list[ContentBlock] = []
    if plan.tool_calls is None:
        result = await collect(stream)
        finished = result.finished
        if result.text:
            content.append(TextBlock(text=result.text))
    else:
        parts, finished = await _collect_calls(split_tool_calls(stream, plan.tool_calls))
        text, calls = call_message_parts(parts)
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


async def _collect_calls(
    items: AsyncIterator[str | ParsedCall | Finished],
) -> tuple[list[str | ParsedCall], Finished]:
    parts: list[str | ParsedCall] = []
    async for item in items:
        if isinstance(item, Finished):
            return parts, item
        parts.append(item)
    raise GenerationFailed("The engine's stream ended without a final event.")
