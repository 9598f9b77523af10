"""OpenAI tool-calling wire types: tool definitions, tool_choice, calls in and out."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

_STRICT = ConfigDict(strict=True, extra="ignore")
FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class FunctionDefinition(BaseModel):
    """A function the model may call: its name, what it does and its JSON Schema parameters."""

    model_config = _STRICT

    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    """One entry of ``tools`` (OpenAI has only function tools)."""

    model_config = _STRICT

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    model_config = _STRICT

    name: str


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming one function: the model must call it."""

    model_config = _STRICT

    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(BaseModel):
    """A call's function: its name and its arguments as a JSON text."""

    model_config = _STRICT

    name: str
    arguments: str


class ToolCall(BaseModel):
    """A tool call, in an assistant message of the history or of a response."""

    model_config = _STRICT

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionCallDelta(BaseModel):
    """A piece of a streamed call's function (absent keys are left out)."""

    name: str | None = None
    arguments: str | None = None

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None}


class ToolCallDelta(BaseModel):
    """A piece of a streamed tool call: the first carries id, type and name."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None}
