"""Stored responses: a bounded in-memory LRU, so a conversation can continue by id.

``store`` (the default) keeps each finished response with the conversation that led to it;
``previous_response_id`` continues from there and ``GET /v1/responses/{id}`` reads it back.
The store is bounded by count and by bytes (the JSON size of what it keeps): the least
recently used responses go first. It lives on the app's state (one per app, created in
the app factory) and is used from the event loop only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import InvalidRequest, NotFound
from app.schemas.chat import ChatMessage
from app.schemas.responses import OutputFunctionCall, OutputMessage, ResponseObject
from app.schemas.tools import FunctionCall, ToolCall

logger = logging.getLogger(__name__)

DEFAULT_MAX_RESPONSES = 1024
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class StoredResponse:
    """A finished response and the whole conversation up to and including its output."""

    response: ResponseObject
    conversation: tuple[ChatMessage, ...]
    size: int


def output_messages(response: ResponseObject) -> list[ChatMessage]:
    """A response's output as chat messages (one assistant turn: text and tool calls)."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for item in response.output:
        if isinstance(item, OutputMessage):
            texts.extend(part.text for part in item.content)
        elif isinstance(item, OutputFunctionCall):
            function = FunctionCall(name=item.name, arguments=item.arguments)
            calls.append(ToolCall(id=item.call_id, function=function))
    content = "".join(texts)
    return [ChatMessage(role="assistant", content=content or None, tool_calls=calls or None)]


class ResponseStore:
    """Finished responses by id, least recently used first out, within two bounds."""

    def __init__(
        self, max_responses: int = DEFAULT_MAX_RESPONSES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self.bytes_used = 0
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, response: ResponseObject, history: Sequence[ChatMessage]) -> None:
        """Keep ``response`` after ``history`` (an entry larger than the bound is not kept)."""
        conversation = (*history, *output_messages(response))
        size = len(response.model_dump_json()) + sum(
            len(m.model_dump_json(exclude_none=True)) for m in conversation
        )
        if size > self.max_bytes or self.max_responses < 1:
            logger.info("response %s not stored: %d bytes is over the bound", response.id, size)
            return
        self._drop(response.id)
        self._entries[response.id] = StoredResponse(response, conversation, size)
        self.bytes_used += size
        while len(self._entries) > self.max_responses or self.bytes_used > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def get(self, response_id: str) -> StoredResponse:
        """The stored response (now the most recently used); ``NotFound`` if absent."""
        entry = self._entries.get(response_id)
        if entry is None:
            raise NotFound(f"No response with id {response_id!r} is stored.", param="response_id")
        self._entries.move_to_end(response_id)
        return entry

    def delete(self, response_id: str) -> None:
        """Forget a stored response; ``NotFound`` if absent."""
        self.get(response_id)
        self._drop(response_id)

    def previous(self, response_id: str | None) -> tuple[ChatMessage, ...]:
        """The conversation that ``previous_response_id`` continues (a 400 if unknown)."""
        if response_id is None:
            return ()
        try:
            return self.get(response_id).conversation
        except NotFound as exc:
            raise InvalidRequest(
                f"Previous response with id {response_id!r} not found: it was never stored "
                "(store: false), or it was evicted, or the server restarted.",
                param="previous_response_id",
            ) from exc

    def _drop(self, response_id: str) -> None:
        entry = self._entries.pop(response_id, None)
        if entry is not None:
            self.bytes_used -= entry.size
