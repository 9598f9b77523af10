"""OpenAI (legacy) text completion wire types."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    field_validator,
)

from app.schemas.common import (
    CompletionUsage,
    FinishReasonWire,
    SamplingRequest,
    UsageWhenAsked,
)
from app.schemas.logprobs import CompletionLogprobs


class CompletionRequest(SamplingRequest):
    """``POST /v1/completions`` body: one prompt, as text or token ids."""

    prompt: str | list[str] | list[int]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = Field(None, ge=0, le=20)

    def logprobs_wanted(self) -> int | None:
        """``logprobs``: top alternatives per token (0: only the sampled token's logprob)."""
        return self.logprobs

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str] | list[int]) -> str | list[str] | list[int]:
        if isinstance(value, list) and value and isinstance(value[0], str) and len(value) != 1:
            raise ValueError("only one prompt per request is supported")
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be empty")
        return value

    @field_validator("echo", "suffix")
    @classmethod
    def _unsupported(cls, value: object) -> object:
        if value:  # echo=true, a suffix: not implemented here
            raise ValueError("this option is not supported by this server")
        return value

    @field_validator("best_of")
    @classmethod
    def _one_candidate(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only best_of=1 is supported")
        return value

    def prompt_input(self) -> str | tuple[int, ...]:
        """The prompt as the engine takes it: text, or a tuple of token ids."""
        if isinstance(self.prompt, str):
            return self.prompt
        first = self.prompt[0]
        if isinstance(first, str):
            return first
        return tuple(int(token) for token in self.prompt)


class CompletionChoice(BaseModel):
    """The one choice of a completion or completion chunk."""

    text: str
    index: int = 0
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReasonWire | None = None


class Completion(UsageWhenAsked):
    """A text completion, or (object ``text_completion`` too) one chunk of a stream."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None
    include_usage: bool = Field(True, exclude=True)
