"""Engine output -> Responses output items, stream events and the final response object.

``ResponseBuilder`` is the one state machine both paths use: the stream sends its events,
a non-streamed call keeps only the final response. Text opens an output ``message`` item
(``output_item.added``, ``content_part.added``, then ``output_text.delta`` per piece); a
tool call closes it and adds a ``function_call`` item; the end closes what is open and
sends ``response.completed`` (or ``response.incomplete`` when ``max_output_tokens`` cut the
reply). Every event carries the next ``sequence_number``. Text deltas, one per token, are
written from a frame rendered when the message opens (no pydantic model per token on the
event loop).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

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
    OutputText,
    OutputTextDoneEvent,
    OutputTokensDetails,
    ResponseError,
    ResponseEvent,
    ResponseLifecycleEvent,
    ResponseObject,
    ResponseUsage,
)
from app.serving.generation import Finished
from app.serving.render import RawJson, json_string
from app.serving.responses.plan import ResponsesPlan
from app.serving.tools import ParsedCall, split_tool_calls

Event = ResponseEvent | RawJson
OnDone = Callable[[ResponseObject], None]
DELTA_HEAD = '{"type":"response.output_text.delta","sequence_number":'


def response_usage(usage: Usage) -> ResponseUsage:
    """The Responses usage object from the engine's."""
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=usage.cached_prompt_tokens),
        output_tokens=usage.completion_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        total_tokens=usage.total_tokens,
    )


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class _OpenMessage:
    item_id: str
    index: int
    delta_tail: str  # the delta event's JSON from after the sequence number to the text
    texts: list[str] = field(default_factory=list)


class ResponseBuilder:
    """Builds the output items and the events of one response, in order."""

    def __init__(self, template: ResponseObject) -> None:
        self.response = template.model_copy(deep=True)
        self._seq = 0
        self._open: _OpenMessage | None = None

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
        events = self._open_message() if self._open is None else []
        opened = self._open
        assert opened is not None
        opened.texts.append(piece)
        # Keys and their order are OutputTextDeltaEvent's (a unit test compares the two).
        delta = f'{DELTA_HEAD}{self._next()}{opened.delta_tail}{json_string(piece)},"logprobs":[]}}'
        events.append(RawJson(delta))
        return events

    def call(self, call: ParsedCall) -> list[Event]:
        """A tool call: closes an open message, then the ``function_call`` item's events."""
        events = self._close_message("completed")
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
        # An empty reply is still one (empty) message.
        empty = self._open is None and not self.response.output
        events = self._open_message() if empty else []
        events += self._close_message("incomplete" if cut else "completed")
        self.response.usage = response_usage(finished.usage)
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

    def _open_message(self) -> list[Event]:
        item_id, index = _item_id("msg"), len(self.response.output)
        tail = f',"item_id":"{item_id}","output_index":{index},"content_index":0,"delta":'
        self._open = _OpenMessage(item_id, index, tail)
        item = OutputMessage(id=item_id, status="in_progress", content=[])
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
                part=OutputText(text=""),
            ),
        ]

    def _close_message(self, status: ItemStatus) -> list[Event]:
        if self._open is None:
            return []
        opened, self._open = self._open, None
        part = OutputText(text="".join(opened.texts))
        where = {"item_id": opened.item_id, "output_index": opened.index}
        events: list[Event] = [
            OutputTextDoneEvent(
                type="response.output_text.done",
                sequence_number=self._next(),
                text=part.text,
                **where,
            ),
            ContentPartEvent(
                type="response.content_part.done",
                sequence_number=self._next(),
                part=part,
                **where,
            ),
        ]
        item = OutputMessage(id=opened.item_id, status=status, content=[part])
        return [*events, self._add_item(item)]

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
    items = stream if plan.tool_calls is None else split_tool_calls(stream, plan.tool_calls)
    async for item in items:
        if isinstance(item, Finished):
            events = builder.finish(item)
            if on_done is not None:
                on_done(builder.response)
            for event in events:
                yield event
            return
        for event in builder.call(item) if isinstance(item, ParsedCall) else builder.text(item):
            yield event
    raise GenerationFailed("The engine's stream ended without a final event.")


async def final_response(
    plan: ResponsesPlan, stream: AsyncIterator[str | Finished], on_done: OnDone | None = None
) -> ResponseObject:
    """The whole response, as a non-streamed call returns it."""
    builder = ResponseBuilder(plan.template)
    async for _ in response_events(plan, builder, stream, on_done):
        pass
    return builder.response
