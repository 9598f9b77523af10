"""Wire types shared by the OpenAI-compatible routes: errors, usage and sampling fields."""

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

from app.limits import MAX_STOP_BYTES
from app.schemas.lora import MAX_LORA_ENTRIES, LoraEntry
from app.schemas.structured import ResponseFormat

MAX_TOKEN_ID_DIGITS = 10  # token ids are 32-bit; longer keys are no token of any vocabulary


class ErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail


class PromptTokensDetails(BaseModel):
    """Breakdown of the prompt tokens."""

    cached_tokens: int


class CompletionUsage(BaseModel):
    """Token accounting of one request, as OpenAI reports it."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class UsageWhenAsked(BaseModel):
    """A response whose ``usage`` key is sent only when ``include_usage`` (never sent) is set."""

    include_usage: bool = Field(False, exclude=True)

    @model_serializer(mode="wrap")
    def _usage_when_asked(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not self.include_usage:
            data.pop("usage", None)
        return data


class StreamOptions(BaseModel):
    """Options of a streamed response."""

    model_config = ConfigDict(strict=True, extra="ignore")

    include_usage: bool = False


# OpenAI allows 4; editor clients send more (Continue's autocomplete sends 7-9). The cap
# keeps the per-token stop matching cheap; the body size limit bounds their length.
MAX_STOP_SEQUENCES = 64


class WireRequest(BaseModel):
    """Base of request bodies: strict types (no "5" for 5), unknown fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class SamplingRequest(WireRequest):
    """The sampling fields chat and text completions share (OpenAI names, llama extras)."""

    model: str | None = Field(None, description="Served model id (alias or file name).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    n: int | None = None
    # llama.cpp-style extras, accepted as vLLM and llama-cpp-python's server do.
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, ge=0.0)
    ignore_eos: bool | None = Field(
        None, description="Keep generating past end-of-generation tokens (benchmarks)."
    )
    speculative: bool | None = Field(
        None,
        description="false: never decode this request speculatively, even when the server "
        "drafts tokens (--speculative); the output is the same either way.",
    )
    # Structured output: OpenAI's response_format, and llama.cpp's raw GBNF grammar.
    response_format: ResponseFormat | None = None
    grammar: str | None = Field(None, min_length=1, max_length=100_000)
    # llama-server's per-request LoRA adapters (ids from GET /lora-adapters).
    lora: list[LoraEntry] | None = Field(None, max_length=MAX_LORA_ENTRIES)

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only n=1 is supported: this server generates one choice per request")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        total = sum(len(s.encode("utf-8", "surrogatepass")) for s in stops)
        if total > MAX_STOP_BYTES.value:
            raise ValueError(
                f"the stop strings take {total} bytes, over this server's limit "
                f"{MAX_STOP_BYTES.name} = {MAX_STOP_BYTES.value}"
            )
        return value

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not (key.isascii() and key.isdigit()) or len(key) > MAX_TOKEN_ID_DIGITS:
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError("logit_bias values must be between -100 and 100")
        return value

    def logprobs_wanted(self) -> int | None:
        """How many top alternatives to report per token; None: no logprobs at all."""
        return None

    def stop_list(self) -> tuple[str, ...]:
        """``stop`` as a tuple, whether it came as one string or a list."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def wants_usage_chunk(self) -> bool:
        """Whether a stream ends with a usage chunk (``stream_options.include_usage``)."""
        return self.stream and self.stream_options is not None and self.stream_options.include_usage


FinishReasonWire = Literal["stop", "length", "tool_calls"]
