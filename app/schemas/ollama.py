"""Ollama API wire types (the subset desktop apps, LangChain and the ``ollama`` client use).

Requests ignore unknown fields like the rest of the API; ``options`` keeps the keys it does
not map so the serving layer can log them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from app.limits import MAX_EMBEDDING_INPUTS
from app.schemas.common import WireRequest

OllamaFormat = str | dict[str, Any] | None


class OllamaOptions(BaseModel):
    """Ollama's ``options`` (Modelfile parameters); unmapped keys are kept in ``model_extra``."""

    model_config = ConfigDict(strict=True, extra="allow")

    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    num_predict: int | None = Field(None, ge=-2)
    stop: list[str] | None = None
    seed: int | None = None
    repeat_penalty: float | None = Field(None, ge=0.0)
    repeat_last_n: int | None = Field(None, ge=-1)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    num_ctx: int | None = None


class OllamaRequest(WireRequest):
    """Fields ``/api/chat`` and ``/api/generate`` share."""

    model: str
    stream: bool = True  # Ollama streams unless told not to
    format: OllamaFormat = None
    options: OllamaOptions | None = None
    keep_alive: str | int | float | None = None


class OllamaFunctionCall(WireRequest):
    """A call's function as Ollama writes it: the arguments are an object, not JSON text."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    index: int | None = None


class OllamaToolCall(WireRequest):
    """One entry of an assistant message's ``tool_calls``."""

    function: OllamaFunctionCall
    id: str | None = None


class OllamaMessage(WireRequest):
    """One chat message; images are not supported (empty lists are fine)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None  # tool messages: the function whose result this is
    thinking: str | None = None


class OllamaChatRequest(OllamaRequest):
    """``POST /api/chat``. No messages: Ollama's "load the model" call."""

    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    think: bool | str | None = None


class OllamaGenerateRequest(OllamaRequest):
    """``POST /api/generate``. An empty prompt: Ollama's "load the model" call."""

    prompt: str = ""
    system: str | None = None
    template: str | None = None
    raw: bool = False
    suffix: str | None = None
    context: list[int] | None = None
    images: list[str] | None = None
    think: bool | str | None = None


class OllamaModelRequest(WireRequest):
    """``POST /api/show``: ``model`` (``name`` in older clients)."""

    model: str | None = None
    name: str | None = None
    verbose: bool = False


class OllamaPullRequest(WireRequest):
    """``POST /api/pull``: ``model`` (``name`` in older clients) to fetch into the library:
    ``hf://owner/repo/file.gguf``, an http(s) URL of a .gguf file, or a built-in name."""

    model: str | None = None
    name: str | None = None
    insecure: bool = False  # accepted, unused (downloads always check TLS)
    stream: bool = True


class OllamaPullStatus(BaseModel):
    """One line of ``/api/pull``'s progress (the last one says ``success``)."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class OllamaDeleteRequest(WireRequest):
    """``DELETE /api/delete``: the library model to remove (``model``, or ``name``)."""

    model: str | None = None
    name: str | None = None


class OllamaEmbedRequest(WireRequest):
    """``POST /api/embed``: one text or a list (an input too long is a 400, not truncated)."""

    model: str
    input: str | list[str] = Field(
        min_length=1,
        description=f"Text or texts to embed (at most {MAX_EMBEDDING_INPUTS.value}: "
        f"{MAX_EMBEDDING_INPUTS.name}).",
    )
    truncate: bool = True

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) > MAX_EMBEDDING_INPUTS.value:
            raise ValueError(
                f"{len(value)} inputs are over this server's limit "
                f"{MAX_EMBEDDING_INPUTS.name} = {MAX_EMBEDDING_INPUTS.value}"
            )
        return value

    options: OllamaOptions | None = None
    keep_alive: str | int | float | None = None


class OllamaLegacyEmbedRequest(WireRequest):
    """``POST /api/embeddings`` (Ollama's older route): one ``prompt``."""

    model: str
    prompt: str
    options: OllamaOptions | None = None
    keep_alive: str | int | float | None = None


class OllamaEmbedResponse(BaseModel):
    """``/api/embed``: one normalised vector per input."""

    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int = 0
    prompt_eval_count: int


class OllamaLegacyEmbedResponse(BaseModel):
    """``/api/embeddings``: the vector of ``prompt``."""

    embedding: list[float]


class OllamaStats(BaseModel):
    """The counters and durations (nanoseconds) of a finished generation."""

    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class OllamaAssistantMessage(BaseModel):
    """The assistant's (partial) reply."""

    role: Literal["assistant"] = "assistant"
    content: str
    thinking: str | None = None
    tool_calls: list[OllamaToolCall] | None = None

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None}


class OllamaChatResponse(OllamaStats):
    """One NDJSON line of ``/api/chat`` (or the whole answer when not streamed)."""

    model: str
    created_at: str
    message: OllamaAssistantMessage
    done: bool
    done_reason: str | None = None


class OllamaGenerateResponse(OllamaStats):
    """One NDJSON line of ``/api/generate`` (or the whole answer when not streamed)."""

    model: str
    created_at: str
    response: str
    done: bool
    done_reason: str | None = None


class OllamaModelDetails(BaseModel):
    """``details`` of a model."""

    parent_model: str = ""
    format: str = "gguf"
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class OllamaModel(BaseModel):
    """A model in ``/api/tags``."""

    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: OllamaModelDetails


class OllamaRunningModel(OllamaModel):
    """A model in ``/api/ps`` (always loaded here)."""

    expires_at: str
    size_vram: int
    context_length: int


class OllamaTags(BaseModel):
    """``GET /api/tags``."""

    models: list[OllamaModel]


class OllamaRunning(BaseModel):
    """``GET /api/ps``."""

    models: list[OllamaRunningModel]


class OllamaShow(BaseModel):
    """``POST /api/show``."""

    modelfile: str
    parameters: str
    template: str
    details: OllamaModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class OllamaVersion(BaseModel):
    """``GET /api/version``: the Ollama API version this server follows."""

    version: str


class OllamaError(BaseModel):
    """Ollama's error body (and the last line of a stream that failed)."""

    error: str
