"""Engine output -> Responses output items, stream events and the final response object.

``ResponseBuilder`` is the one state machine both paths use: the stream sends its events,
a non-streamed call keeps only the final response. Reasoning (which the model writes first)
opens a ``reasoning`` item (``output_item.added``, ``content_part.added`` with a
``reasoning_text`` part, then ``reasoning_text.delta`` per piece, ``reasoning_text.done``);
text opens an output ``message`` item (``output_item.added``, ``content_part.added``, then
``output_text.delta`` per piece), closing the reasoning item first; a tool call closes it
and adds a ``function_call`` item; the end closes what is open and
sends ``response.completed`` (or ``response.incomplete`` when ``max_output_tokens`` cut the
reply). Every event carries the next ``sequence_number``. Text deltas, one per token, are
written from a frame rendered when the message opens (no pydantic model per token on the
event loop).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from app.engine.types import Usage
from app.errors import GenerationFailed
from app.schemas.responses import (
    ContentPartEvent,
    ErrorEvent,
    FunctionCallArgumentsDeltaEvent,
    FunctionCallArgumentsDoneEvent,
    IncompleteDetails,
    InputTokensDetails,
    ItemStatus,
    OutputFunctionCall,
    OutputItem,
    OutputItemEvent,
    OutputMessage,
    OutputReasoning,
    OutputText,
    OutputTextDoneEvent,
    OutputTokensDetails,
    ReasoningText,
    ReasoningTextDoneEvent,
    ResponseError,
    ResponseEvent,
    ResponseLifecycleEvent,
    ResponseObject,
    ResponseUsage,
)
from app.serving.generation import Finished
from app.serving.reasoning import Reasoning
from app.serving.render import RawJson, json_string
from app.serving.responses.plan import ResponsesPlan
from app.serving.tools import ParsedCall, split_tool_calls

Event = ResponseEvent | RawJson
OnDone = Callable[[ResponseObject], None]
DELTA_EVENT = "response.output_text.delta"
REASONING_DELTA_EVENT = "response.reasoning_text.delta"
DELTA_HEAD = f'{{"type":"{DELTA_EVENT}","sequence_number":'
REASONING_HEAD = f'{{"type":"{REASONING_DELTA_EVENT}","sequence_number":'


def event_name(event: Event) -> str:
    """The SSE name of an event (a pre-rendered delta's is its ``type``)."""
    if isinstance(event, RawJson):
        return REASONING_DELTA_EVENT if event.startswith(REASONING_HEAD) else DELTA_EVENT
    return event.type


def response_usage(usage: Usage, reasoning_tokens: int = 0) -> ResponseUsage:
    """The Responses usage object from the engine's (``reasoning_tokens``: of the output)."""
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=usage.cached_prompt_tokens),
        output_tokens=usage.completion_tokens,
        output_tokens_details=OutputTokensDetails(
            reasoning_tokens=min(reasoning_tokens, usage.completion_tokens)
        ),
        total_tokens=usage.total_tokens,
    )


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class _OpenItem:
    kind: str  # "message" or "reasoning"
    item_id: str
    index: int
    delta_head: str  # the delta event's JSON up to the sequence number
    delta_tail: str  # the delta event's JSON from after the sequence number to the text
    delta_end: str  # after the text
    texts: list[str] = field(default_factory=list)


class ResponseBuilder:
    """Builds the output items and the events of one response, in order."""

    def __init__(self, template: ResponseObject) -> None:
        self.response = template.model_copy(deep=True)
        self._seq = 0
        self._open: _OpenItem | None = None
        self.reasoning_pieces = 0  # pieces of reasoning (one per token as the engine sends)

    def _next(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def lifecycle(self, kind: str) -> ResponseLifecycleEvent:
        """``response.<kind>`` carrying a snapshot of the response."""
        snapshot = self.response.model_copy(deep=True)
        return ResponseLifecycleEvent(
            type=f"response.{kind}", sequence_number=self._next(), response=snapshot
        )

    def start(self) -> list[Event]:
        """``response.created`` and ``response.in_progress``."""
        return [self.lifecycle("created"), self.lifecycle("in_progress")]

    def text(self, piece: str) -> list[Event]:
        """A piece of text: opens a message item first if none is open."""
        return self._piece("message", piece)

    def reasoning(self, piece: str) -> list[Event]:
        """A piece of reasoning: opens a reasoning item first if none is open."""
        self.reasoning_pieces += 1
        return self._piece("reasoning", piece)

    def _piece(self, kind: str, piece: str) -> list[Event]:
        events: list[Event] = []
        if self._open is None or self._open.kind != kind:
            events = [*self._close_open("completed"), *self._open_item(kind)]
        opened = self._open
        assert opened is not None
        opened.texts.append(piece)
        # Keys and their order are the delta event model's (a unit test compares the two).
        head, tail, end = opened.delta_head, opened.delta_tail, opened.delta_end
        events.append(RawJson(f"{head}{self._next()}{tail}{json_string(piece)}{end}"))
        return events

    def call(self, call: ParsedCall) -> list[Event]:
        """A tool call: closes an open message, then the ``function_call`` item's events."""
        events = self._close_open("completed")
        item_id, index = _item_id("fc"), len(self.response.output)
        item = OutputFunctionCall(
            id=item_id, call_id=call.id, name=call.name, arguments="", status="in_progress"
        )
        done = item.model_copy(update={"arguments": call.arguments, "status": "completed"})
        where = {"item_id": item_id, "output_index": index}
        events += [
            OutputItemEvent(
                type="response.output_item.added",
                sequence_number=self._next(),
                output_index=index,
                item=item,
            ),
            FunctionCallArgumentsDeltaEvent(
                type="response.function_call_arguments.delta",
                sequence_number=self._next(),
                delta=call.arguments,
                **where,
            ),
            FunctionCallArgumentsDoneEvent(
                type="response.function_call_arguments.done",
                sequence_number=self._next(),
                name=call.name,
                arguments=call.arguments,
                **where,
            ),
        ]
        return [*events, self._add_item(done)]

    def finish(self, finished: Finished) -> list[Event]:
        """The end: close what is open, set status and usage, then the final event."""
        cut = finished.reason == "length"
        status: ItemStatus = "incomplete" if cut else "completed"
        thought = self._open is not None and self._open.kind == "reasoning"
        events = self._close_open(status) if thought else []
        # An empty reply is still one (empty) message; so is one that only thought (unless
        # the cap cut its thinking: then the reasoning item is the incomplete output).
        answered = any(item.type != "reasoning" for item in self.response.output)
        if self._open is None and not answered and not (cut and thought):
            events += self._open_item("message")
        events += self._close_open(status)
        self.response.usage = response_usage(finished.usage, self.reasoning_pieces)
        if cut:
            self.response.status = "incomplete"
            self.response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
            return [*events, self.lifecycle("incomplete")]
        self.response.status = "completed"
        return [*events, self.lifecycle("completed")]

    def fail(self, code: str | None, message: str, param: str | None) -> list[ResponseEvent]:
        """An ``error`` event, then ``response.failed`` (the stream's last two events)."""
        self.response.status = "failed"
        self.response.error = ResponseError(code=code or "server_error", message=message)
        error = ErrorEvent(
            type="error", sequence_number=self._next(), code=code, message=message, param=param
        )
        return [error, self.lifecycle("failed")]

    def _open_item(self, kind: str) -> list[Event]:
        """Open a message or reasoning item: ``output_item.added``, ``content_part.added``."""
        prefix, head = ("rs", REASONING_HEAD) if kind == "reasoning" else ("msg", DELTA_HEAD)
        item_id, index = _item_id(prefix), len(self.response.output)
        tail = f',"item_id":"{item_id}","output_index":{index},"content_index":0,"delta":'
        end = "}" if kind == "reasoning" else ',"logprobs":[]}'
        self._open = _OpenItem(kind, item_id, index, head, tail, end)
        item: OutputItem
        part: OutputText | ReasoningText
        if kind == "reasoning":
            item, part = OutputReasoning(id=item_id, status="in_progress"), ReasoningText(text="")
        else:
            item = OutputMessage(id=item_id, status="in_progress", content=[])
            part = OutputText(text="")
        return [
            OutputItemEvent(
                type="response.output_item.added",
                sequence_number=self._next(),
                output_index=index,
                item=item,
            ),
            ContentPartEvent(
                type="response.content_part.added",
                sequence_number=self._next(),
                item_id=item_id,
                output_index=index,
                part=part,
            ),
        ]

    def _close_open(self, status: ItemStatus) -> list[Event]:
        """Close the open item: its text's ``.done``, ``content_part.done``, the item's done."""
        if self._open is None:
            return []
        opened, self._open = self._open, None
        text = "".join(opened.texts)
        where: dict[str, Any] = {"item_id": opened.item_id, "output_index": opened.index}
        item: OutputItem
        if opened.kind == "reasoning":
            part: OutputText | ReasoningText = ReasoningText(text=text)
            done: Event = ReasoningTextDoneEvent(
                type="response.reasoning_text.done",
                sequence_number=self._next(),
                text=text,
                **where,
            )
            item = OutputReasoning(id=opened.item_id, status=status, content=[part])
        else:
            part = OutputText(text=text)
            done = OutputTextDoneEvent(
                type="response.output_text.done", sequence_number=self._next(), text=text, **where
            )
            item = OutputMessage(id=opened.item_id, status=status, content=[part])
        part_done = ContentPartEvent(
            type="response.content_part.done", sequence_number=self._next(), part=part, **where
        )
        return [done, part_done, self._add_item(item)]

    def _add_item(self, item: OutputItem) -> OutputItemEvent:
        index = len(self.response.output)
        self.response.output.append(item)
        return OutputItemEvent(
            type="response.output_item.done",
            sequence_number=self._next(),
            output_index=index,
            item=item,
        )


async def response_events(
    plan: ResponsesPlan,
    builder: ResponseBuilder,
    stream: AsyncIterator[str | Finished],
    on_done: OnDone | None = None,
) -> AsyncIterator[Event]:
    """The stream's events, from ``response.created`` to the final one; the finished
    response goes to ``on_done`` (the store) before that final event is sent."""
    for event in builder.start():
        yield event
    async for item in _items(plan, stream):
        if isinstance(item, Finished):
            events = builder.finish(item)
            if on_done is not None:
                on_done(builder.response)
            for event in events:
                yield event
            return
        if isinstance(item, Reasoning):
            events = builder.reasoning(item.text)
        elif isinstance(item, ParsedCall):
            events = builder.call(item)
        else:
            events = builder.text(item)
        for event in events:
            yield event
    raise GenerationFailed("The engine's stream ended without a final event.")


def _items(plan: ResponsesPlan, stream: AsyncIterator[str | Finished]) -> AsyncIterator[Any]:
    """The reply's items: reasoning split out, then tool calls."""
    items: AsyncIterator[Any] = stream
    if plan.reasoning is not None:
        items = plan.reasoning.split(items)
    if plan.tool_calls is not None:
        items = split_tool_calls(items, plan.tool_calls)
    return items


async def final_response(
    plan: ResponsesPlan, stream: AsyncIterator[str | Finished], on_done: OnDone | None = None
) -> ResponseObject:
    """The whole response, as a non-streamed call returns it."""
    builder = ResponseBuilder(plan.template)
    async for _ in response_events(plan, builder, stream, on_done):
        pass
    return builder.response
