"""Turn an engine event stream into text pieces and one ``Finished``; collect a whole reply.

Every route family builds on this: streams map pieces to chunks, non-streamed responses
collect them. These are pure transformers: the engine's stream handle, held by the API
layer's per-call object, is what aborts a request that ends early.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from app.engine.types import FinishReason, Timings, TokenEvent, TokenLogprob, Usage
from app.errors import GenerationFailed, InvalidRequest, RequestCancelled
from app.schemas.common import FinishReasonWire
from app.serving.logprobs import LoggedPiece, logprobs_of


@dataclass(frozen=True)
class Finished:
    """The end of a generation, as the wire sees it."""

    reason: FinishReasonWire
    usage: Usage
    timings: Timings | None
    logprobs: tuple[TokenLogprob, ...] = ()  # of tokens whose text came with no later piece
    stop_sequence: str | None = None  # the request's stop string that ended the reply


FinishSink = Callable[[Finished], None]


def wire_finish_reason(reason: FinishReason, error: str | None) -> FinishReasonWire:
    """OpenAI's finish_reason; an engine error or a cancellation is raised instead."""
    if reason is FinishReason.STOP:
        return "stop"
    if reason is FinishReason.LENGTH:
        return "length"
    if reason is FinishReason.CANCELLED:
        # Only a stopping engine cancels a request that someone still reads.
        raise RequestCancelled("server shutting down: the request was ended before it finished.")
    if reason is FinishReason.REFUSED:
        raise InvalidRequest(f"The request cannot be generated: {error}.")
    raise GenerationFailed(error or "The engine failed while generating.")


def _ignore(_: Finished) -> None:
    return None


async def pieces(
    events: AsyncIterator[TokenEvent], on_finish: FinishSink = _ignore
) -> AsyncIterator[str | Finished]:
    """Non-empty text pieces, then one ``Finished`` (also handed to ``on_finish``).

    Raises ``GenerationFailed`` or ``RequestCancelled`` when the engine ends the request
    that way. Pure: ending the request early is the job of whoever holds the engine's
    stream handle (closing it aborts the request).
    """
    pending: list[TokenLogprob] = []  # logprobs of tokens whose text is held back
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
                event.stop_sequence,
            )
            on_finish(finished)
            yield finished
            return
    raise GenerationFailed("The engine's stream ended without a final event.")


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
