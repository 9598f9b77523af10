"""OpenAI Responses API wire types: the request (input items, tools, text format), the
response object, its output items and the stream's events.

Request items and tools are tagged unions on ``type``. Types this server does not run -
hosted tools such as ``web_search`` or ``local_shell``, custom and MCP tools, items such as
``item_reference`` - parse as ``OtherTool`` / ``OtherItem`` so that agents which send them
(Codex sends many) get an answer; the serving layer leaves them out and logs it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from app.schemas.common import WireRequest
from app.schemas.tools import FUNCTION_NAME

_LOOSE = ConfigDict(extra="allow")


class ContentPart(WireRequest):
    """A part of a message's content: ``input_text`` / ``output_text`` (others are refused)."""

    type: str
    text: str | None = None


class MessageItem(WireRequest):
    """A message of the conversation (``type`` may be left out, as the SDK's easy form does)."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(WireRequest):
    """A function call the model made earlier (from a previous response's output)."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(WireRequest):
    """The result of a function call, sent back by the client."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class ReasoningItem(WireRequest):
    """A reasoning item of an earlier response: accepted, not shown to the model."""

    model_config = ConfigDict(strict=True, extra="allow")

    type: Literal["reasoning"]


class OtherItem(WireRequest):
    """An item of a type this server does not use (left out of the prompt, logged)."""

    model_config = ConfigDict(strict=True, extra="allow")

    type: str


KNOWN_ITEMS = frozenset({"message", "function_call", "function_call_output", "reasoning"})


def _item_tag(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "")
    return kind if kind in KNOWN_ITEMS else "other"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_tag),
]


class FunctionTool(WireRequest):
    """A function the model may call (Responses' flat form: name at the top level)."""

    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OtherTool(WireRequest):
    """A tool of a type this server does not run (web_search, local_shell, custom, mcp...)."""

    model_config = ConfigDict(strict=True, extra="allow")

    type: str


def _tool_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "function" if kind == "function" else "other"


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[OtherTool, Tag("other")],
    Discriminator(_tool_tag),
]


class ToolChoiceFunction(WireRequest):
    """``tool_choice`` naming a function tool (or, with another type, a hosted tool)."""

    model_config = ConfigDict(strict=True, extra="allow")

    type: str
    name: str | None = None


ToolChoice = Literal["none", "auto", "required"] | ToolChoiceFunction


class TextFormat(WireRequest):
    """``text.format``: plain text, any JSON object, or JSON following a named schema."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(WireRequest):
    """``text``: the output format (and ``verbosity``, accepted)."""

    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningConfig(WireRequest):
    """``reasoning``: ``effort`` goes to the chat template (``none``: asked not to think);
    echoed. No summaries are written: the reasoning comes as ``reasoning_text``."""

    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class ResponsesRequest(WireRequest):
    """``POST /v1/responses`` body (also ``/v1/responses/input_tokens``, without generating)."""

    model: str | None = Field(None, description="Served model id (alias or file name).")
    input: str | list[InputItem] = Field(default_factory=list)
    instructions: str | None = None
    tools: list[Tool] | None = Field(None, max_length=1024)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: str | None = None


# --- The response object and its output items -----------------------------------------


class OutputText(BaseModel):
    """A text part of an output message."""

    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputMessage(BaseModel):
    """An assistant message in a response's output."""

    type: Literal["message"] = "message"
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class OutputFunctionCall(BaseModel):
    """A function call in a response's output."""

    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class ReasoningText(BaseModel):
    """A reasoning item's text (the model's own thinking, not a summary)."""

    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class OutputReasoning(BaseModel):
    """The model's reasoning before its answer (``summary`` stays empty: none is written)."""

    type: Literal["reasoning"] = "reasoning"
    id: str
    status: ItemStatus
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText] = Field(default_factory=list)


OutputItem = OutputReasoning | OutputMessage | OutputFunctionCall


class InputTokensDetails(BaseModel):
    """Breakdown of the input tokens (``cached_tokens``: reused from the prompt cache)."""

    cached_tokens: int
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    """Breakdown of the output tokens."""

    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    """Token accounting of a response."""

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(BaseModel):
    """Why a response failed."""

    code: str
    message: str


class IncompleteDetails(BaseModel):
    """Why a response is incomplete."""

    reason: Literal["max_output_tokens", "content_filter"]


ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]


class ResponseObject(BaseModel):
    """A response (``object: "response"``), as returned, streamed and stored."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] = Field(default_factory=lambda: {"effort": None, "summary": None})
    store: bool = True
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    top_p: float | None = None
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class DeletedResponse(BaseModel):
    """``DELETE /v1/responses/{id}`` answer."""

    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class InputTokenCount(BaseModel):
    """``POST /v1/responses/input_tokens`` answer."""

    object: Literal["response.input_tokens"] = "response.input_tokens"
    input_tokens: int


# --- Stream events ---------------------------------------------------------------------


class ResponseEvent(BaseModel):
    """Base of the stream's events: each has a type and a sequence number."""

    type: str
    sequence_number: int


class ResponseLifecycleEvent(ResponseEvent):
    """``response.created`` / ``in_progress`` / ``completed`` / ``incomplete`` / ``failed``."""

    response: ResponseObject


class OutputItemEvent(ResponseEvent):
    """``response.output_item.added`` / ``.done``."""

    output_index: int
    item: OutputItem


class ContentPartEvent(ResponseEvent):
    """``response.content_part.added`` / ``.done``."""

    item_id: str
    output_index: int
    content_index: int = 0
    part: OutputText | ReasoningText


class OutputTextDeltaEvent(ResponseEvent):
    """``response.output_text.delta``: a piece of text."""

    item_id: str
    output_index: int
    content_index: int = 0
    delta: str
    logprobs: list[Any] = Field(default_factory=list)


class OutputTextDoneEvent(ResponseEvent):
    """``response.output_text.done``: the whole text of a part."""

    item_id: str
    output_index: int
    content_index: int = 0
    text: str
    logprobs: list[Any] = Field(default_factory=list)


class ReasoningTextDeltaEvent(ResponseEvent):
    """``response.reasoning_text.delta``: a piece of reasoning."""

    item_id: str
    output_index: int
    content_index: int = 0
    delta: str


class ReasoningTextDoneEvent(ResponseEvent):
    """``response.reasoning_text.done``: the whole reasoning text of a part."""

    item_id: str
    output_index: int
    content_index: int = 0
    text: str


class FunctionCallArgumentsDeltaEvent(ResponseEvent):
    """``response.function_call_arguments.delta``."""

    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDoneEvent(ResponseEvent):
    """``response.function_call_arguments.done``."""

    item_id: str
    output_index: int
    name: str
    arguments: str


class ErrorEvent(ResponseEvent):
    """``error``: the stream failed (a ``response.failed`` event follows)."""

    code: str | None = None
    message: str
    param: str | None = None
