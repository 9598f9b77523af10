"""OpenAI logprobs wire types: chat's per-token list and the legacy completions shape."""

from __future__ import annotations

from pydantic import BaseModel


class TopLogprob(BaseModel):
    """One likely token at a position."""

    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    """A generated token, its logprob and the most likely tokens at its position."""

    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    """``choices[].logprobs`` of a chat completion or chunk."""

    content: list[ChatTokenLogprob] | None
    refusal: list[ChatTokenLogprob] | None = None


class CompletionLogprobs(BaseModel):
    """``choices[].logprobs`` of a text completion (OpenAI's legacy shape)."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]
