"""Engine token logprobs -> OpenAI's chat and completions logprobs shapes.

Logprobs travel with the text: ``pieces`` yields a ``LoggedPiece`` (a ``str`` that also
carries the logprobs of the tokens that made it), so every consumer that only wants text
keeps working unchanged. Tokens whose text is held back (part of a UTF-8 character, a
possible stop string) ride on the next piece, or on ``Finished`` at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.engine.types import TokenLogprob
from app.schemas.logprobs import ChatTokenLogprob, ChoiceLogprobs, CompletionLogprobs, TopLogprob


class LoggedPiece(str):
    """A text piece with the logprobs of its tokens."""

    __slots__ = ("logprobs",)
    logprobs: tuple[TokenLogprob, ...]

    def __new__(cls, text: str, logprobs: Sequence[TokenLogprob]) -> LoggedPiece:
        piece = super().__new__(cls, text)
        piece.logprobs = tuple(logprobs)
        return piece


def logprobs_of(item: str) -> tuple[TokenLogprob, ...]:
    """The logprobs a piece carries (none for a plain ``str``)."""
    return item.logprobs if isinstance(item, LoggedPiece) else ()


def _text(token: bytes) -> str:
    return token.decode("utf-8", errors="backslashreplace")


def chat_logprobs(entries: Sequence[TokenLogprob]) -> ChoiceLogprobs:
    """Chat's ``logprobs``: one entry per token with its top alternatives (best first)."""
    return ChoiceLogprobs(
        content=[
            ChatTokenLogprob(
                token=_text(e.token),
                logprob=e.logprob,
                bytes=list(e.token),
                top_logprobs=[
                    TopLogprob(token=_text(t), logprob=lp, bytes=list(t)) for t, lp in e.top
                ],
            )
            for e in entries
        ]
    )


def completion_logprobs(entries: Sequence[TokenLogprob], offset: int = 0) -> CompletionLogprobs:
    """The completions ``logprobs`` object; ``offset`` is where the first token's text starts."""
    tokens = [_text(e.token) for e in entries]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return CompletionLogprobs(
        tokens=tokens,
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=[{_text(t): lp for t, lp in e.top} for e in entries],
        text_offset=offsets,
    )
