"""OpenAI chat completion wire types: the request, the response and the stream chunk."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from app.schemas.common import (
    CompletionUsage,
    FinishReasonWire,
    SamplingRequest,
    UsageWhenAsked,
    WireRequest,
)
from app.schemas.logprobs import ChoiceLogprobs
from app.schemas.tools import ToolCall, ToolCallDelta, ToolChoice, ToolDefinition


class TextContentPart(WireRequest):
    """A text part of a message's content (the only part type this server takes)."""

    type: Literal["text"]
    text: str


class ChatMessage(WireRequest):
    """One message of a conversation. ``developer`` is OpenAI's newer name for ``system``."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextContentPart] | None = None
    tool_calls: list[ToolCall] | None = None  # assistant messages that called tools
    tool_call_id: str | None = None  # tool messages: the call this result answers
    name: str | None = None

    def text(self) -> str:
        """The content as one string (text parts joined by newlines)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingRequest):
    """``POST /v1/chat/completions`` body."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[ToolDefinition] | None = Field(None, max_length=128)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="Extra variables for the chat template, e.g. enable_thinking."
    )
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = Field(
        None, description="Passed to templates that read it (gpt-oss)."
    )
    reasoning_budget: int | None = Field(
        None, ge=0, description="Thinking tokens before the block is closed (0: no thinking)."
    )
    reasoning_format: Literal["auto", "none"] | None = Field(
        None, description="'none' leaves the reasoning in the content (default: the server's)."
    )

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs set to true")
        return self

    def logprobs_wanted(self) -> int | None:
        """``top_logprobs`` (0 when unset) when ``logprobs`` is true."""
        return (self.top_logprobs or 0) if self.logprobs else None


class ChatCompletionMessage(BaseModel):
    """The assistant's reply in a non-streamed response."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None  # llama-server's and DeepSeek's name
    reasoning: str | None = None  # vLLM's newer name for the same text

    @model_serializer(mode="wrap")
    def _calls_when_any(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("tool_calls", "reasoning_content", "reasoning"):
            if getattr(self, key) is None:
                data.pop(key, None)
        return data


class SchemaCheckResult(BaseModel):
    """cria-server's ``choices[].schema_check`` (only with a ``json_schema`` response_format):
    whether the finished reply validates against the schema, checked with ``jsonschema`` and
    its format checker, with up to 5 reasons why not. ``truncated``: the reply ended
    (``finish_reason: length``) before its JSON did."""

    valid: bool
    errors: list[str] = Field(default_factory=list)
    truncated: bool = False


def _absent(value: object) -> bool:
    return value is None


class ChatCompletionChoice(BaseModel):
    """The one choice of a non-streamed response."""

    index: int = 0
    message: ChatCompletionMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReasonWire
    schema_check: SchemaCheckResult | None = Field(None, exclude_if=_absent)


class ChatCompletion(BaseModel):
    """A non-streamed chat completion."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage
    system_fingerprint: str | None = None


class ChoiceDelta(BaseModel):
    """What one chunk adds to the message; absent keys are left out, as OpenAI does."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None}


class ChatCompletionChunkChoice(BaseModel):
    """The one choice of a stream chunk."""

    index: int = 0
    delta: ChoiceDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReasonWire | None = None
    schema_check: SchemaCheckResult | None = Field(None, exclude_if=_absent)


class ChatCompletionChunk(UsageWhenAsked):
    """One streamed chunk. ``usage`` is sent (null until the last chunk) only when asked."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatCompletionChunkChoice]
    usage: CompletionUsage | None = None
