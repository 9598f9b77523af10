"""Turn an engine event stream into text pieces and one ``Finished``, aborting when cut short.

Every route family builds on this: streams map pieces to chunks, non-streamed responses
collect them. Closing the iterator early (client gone) aborts the request in the engine,
so its slot is free at the next step.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio

from app.engine.protocol import Engine
from app.engine.types import GenerationRequest, TokenEvent, TokenLogprob
from app.serving.errors import GenerationFailed
from app.serving.logprobs import LoggedPiece, logprobs_of
from app.serving.sampling import Finished, wire_finish_reason
from app.serving.tools import ToolCalls

FinishSink = Callable[[Finished], None]

DROPPED_MESSAGES_HEADER = "X-Context-Dropped-Messages"


@dataclass(frozen=True)
class ResponsePlan:
    """A validated request, ready for the engine, and what its response objects need."""

    request: GenerationRequest
    completion_id: str
    model: str
    created: int
    include_usage: bool
    tool_calls: ToolCalls | None = None  # chat with tools: parse calls out of the reply
    dropped_messages: int = 0  # oldest chat messages left out to fit the context

    def headers(self) -> dict[str, str]:
        """Response headers that describe the plan (what was dropped to fit, if anything)."""
        if not self.dropped_messages:
            return {}
        return {DROPPED_MESSAGES_HEADER: str(self.dropped_messages)}

    @classmethod
    def new(
        cls, request: GenerationRequest, *, id_prefix: str, model: str, include_usage: bool
    ) -> ResponsePlan:
        """A plan created now, with an OpenAI-style id (``chatcmpl-...``, ``cmpl-...``)."""
        completion_id = f"{id_prefix}-{request.request_id}"
        return cls(request, completion_id, model, int(time.time()), include_usage)


def _ignore(_: Finished) -> None:
    return None


async def pieces(
    engine: Engine,
    request_id: str,
    events: AsyncIterator[TokenEvent],
    on_finish: FinishSink = _ignore,
) -> AsyncIterator[str | Finished]:
    """Non-empty text pieces, then one ``Finished`` (also handed to ``on_finish``).

    Raises ``GenerationFailed`` or ``RequestCancelled`` when the engine ends the request
    that way. However the iteration ends, the request is aborted in the engine (a no-op
    for finished requests) and the engine's stream is closed.
    """
    pending: list[TokenLogprob] = []  # logprobs of tokens whose text is held back
    try:
        async for event in events:
            if event.logprob is not None:
                pending.append(event.logprob)
            if event.text:
                if pending:
                    yield LoggedPiece(event.text, pending)
                    pending = []
                else:
                    yield event.text
            if event.finish_reason is not None:
                if event.usage is None:
                    raise GenerationFailed("The engine finished a request without usage.")
                finished = Finished(
                    wire_finish_reason(event.finish_reason, event.error),
                    event.usage,
                    event.timings,
                    tuple(pending),
                )
                on_finish(finished)
                yield finished
                return
        raise GenerationFailed("The engine's stream ended without a final event.")
    finally:
        engine.abort(request_id)
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            # Shielded: this also runs while the task is being cancelled (client gone).
            with anyio.CancelScope(shield=True):
                await aclose()


@dataclass(frozen=True)
class Collected:
    """A whole generation: its text and how it ended."""

    text: str
    finished: Finished
    logprobs: tuple[TokenLogprob, ...] = ()  # when the request asked for them


async def collect(stream: AsyncIterator[str | Finished]) -> Collected:
    """Join the pieces of ``stream`` (see ``pieces``)."""
    parts: list[str] = []
    logprobs: list[TokenLogprob] = []
    async for item in stream:
        if isinstance(item, Finished):
            logprobs.extend(item.logprobs)
            return Collected("".join(parts), item, tuple(logprobs))
        parts.append(item)
        logprobs.extend(logprobs_of(item))
    raise GenerationFailed("The engine's stream ended without a final event.")
