"""Anthropic Messages API wire types: the request, the message, the stream events, errors.

Names follow Anthropic's API reference (``MessageParam``, ``ToolUseBlock``,
``RawMessageStartEvent``...). Request models ignore unknown fields (``metadata``,
``cache_control``, ``service_tier``, beta fields), as the other families do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from app.schemas.common import MAX_STOP_SEQUENCES, WireRequest
from app.schemas.tools import FUNCTION_NAME

# --- request ------------------------------------------------------------------------------


class TextBlockParam(WireRequest):
    """A text block of a message or of ``system`` (``cache_control`` is accepted, ignored)."""

    type: Literal["text"]
    text: str


class ToolUseBlockParam(WireRequest):
    """A tool call the assistant made earlier in the conversation."""

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlockParam(WireRequest):
    """The result of a tool call, in a user message."""

    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlockParam] | None = None
    is_error: bool | None = None

    def text(self) -> str:
        """The result as one string (text blocks joined by newlines)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "\n".join(block.text for block in self.content)


class ThinkingBlockParam(WireRequest):
    """Earlier reasoning sent back in the history (accepted; not shown to the model again)."""

    type: Literal["thinking", "redacted_thinking"]


ContentBlockParam = Annotated[
    TextBlockParam | ToolUseBlockParam | ToolResultBlockParam | ThinkingBlockParam,
    Field(discriminator="type"),
]


class MessageParam(WireRequest):
    """One turn: ``user`` (text, tool results) or ``assistant`` (text, tool calls)."""

    role: Literal["user", "assistant"]
    content: str | list[ContentBlockParam]


class ToolParam(WireRequest):
    """A tool: a custom one (name, description, the JSON Schema of its input), or one of
    Anthropic's own (``web_search_20250305``, ``bash_20250124``...), which this server
    ignores (see ``serving.anthropic.convert``)."""

    type: str | None = None  # None or "custom": a client tool with an input_schema
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    strict: bool | None = None  # calls must follow input_schema exactly (else a 400 up front)

    @property
    def is_custom(self) -> bool:
        """Whether this is a tool the client defines (and runs) itself."""
        return self.type in (None, "custom")

    @model_validator(mode="after")
    def _custom_has_schema(self) -> ToolParam:
        if self.is_custom and self.input_schema is None:
            raise ValueError("a custom tool needs an input_schema")
        return self


class ToolChoiceAuto(WireRequest):
    """The model decides whether to call tools."""

    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(WireRequest):
    """The model must call at least one tool."""

    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(WireRequest):
    """The model must call the named tool."""

    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(WireRequest):
    """The model must not call tools."""

    type: Literal["none"]


ToolChoice = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")
]


class ThinkingConfig(WireRequest):
    """Extended thinking: ``enabled`` splits the model's reasoning into ``thinking`` blocks,
    closing it after ``budget_tokens``; ``disabled`` asks the chat template not to think."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=0)


class MessagesRequest(WireRequest):
    """``POST /v1/messages`` body."""

    model: str = Field(description="Served model id (any name answers unless strict).")
    max_tokens: int = Field(ge=1, description="Cap on generated tokens (clamped to the context).")
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlockParam] | None = None
    stop_sequences: list[str] | None = Field(None, max_length=MAX_STOP_SEQUENCES)
    stream: bool = False
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    tools: list[ToolParam] | None = Field(None, max_length=128)
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, value: list[str] | None) -> list[str] | None:
        if any(not stop for stop in value or ()):
            raise ValueError("stop sequences must not be empty")
        return value


class CountTokensRequest(WireRequest):
    """``POST /v1/messages/count_tokens`` body: a request without the generation fields."""

    model: str
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlockParam] | None = None
    tools: list[ToolParam] | None = Field(None, max_length=128)
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None


# --- response -----------------------------------------------------------------------------

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class TextBlock(BaseModel):
    """Text the assistant wrote."""

    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(BaseModel):
    """A tool call the assistant made: its id, the tool's name and the parsed input."""

    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class ThinkingBlock(BaseModel):
    """The model's reasoning before its answer (``signature``: a hash of the text; this
    server does not check the signatures sent back)."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str


ContentBlock = ThinkingBlock | TextBlock | ToolUseBlock


class Usage(BaseModel):
    """Token accounting: ``input_tokens`` excludes the prompt tokens read from the cache."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class Message(BaseModel):
    """A reply (and the ``message`` of ``message_start``, with no content yet)."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[ContentBlock]
    model: str
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage


class CountTokensResponse(BaseModel):
    """The tokens a request's prompt takes."""

    input_tokens: int


# --- stream events ------------------------------------------------------------------------


class MessageStartEvent(BaseModel):
    type: Literal["message_start"] = "message_start"
    message: Message


class ContentBlockStartEvent(BaseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: ContentBlock


class PingEvent(BaseModel):
    type: Literal["ping"] = "ping"


class TextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJsonDelta(BaseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ThinkingDelta(BaseModel):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class SignatureDelta(BaseModel):
    type: Literal["signature_delta"] = "signature_delta"
    signature: str


class ContentBlockDeltaEvent(BaseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: TextDelta | InputJsonDelta | ThinkingDelta | SignatureDelta


class ContentBlockStopEvent(BaseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDelta(BaseModel):
    stop_reason: StopReason | None
    stop_sequence: str | None = None


class MessageDeltaEvent(BaseModel):
    """The end of the reply: why it stopped, and the whole usage."""

    type: Literal["message_delta"] = "message_delta"
    delta: MessageDelta
    usage: Usage


class MessageStopEvent(BaseModel):
    type: Literal["message_stop"] = "message_stop"


StreamEvent = (
    MessageStartEvent
    | ContentBlockStartEvent
    | PingEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
)


# --- errors -------------------------------------------------------------------------------


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """Anthropic's error body, and the data of a failed stream's ``error`` event."""

    type: Literal["error"] = "error"
    error: AnthropicErrorDetail
