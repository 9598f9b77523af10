"""Text Generation Inference (TGI) wire types: ``/generate``, ``/generate_stream``, ``/info``.

Shapes follow TGI's router so ``huggingface_hub.InferenceClient`` and ``text_generation``
clients parse them. ``logprob`` is null: this server does not compute log-probabilities.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.common import WireRequest

TgiFinishReason = Literal["length", "eos_token", "stop_sequence"]


class TgiParameters(WireRequest):
    """``parameters`` of a generate request (TGI names; ``null`` means unset, as TGI's own
    Python client sends every field)."""

    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, ge=0.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: list[str] | None = None
    do_sample: bool | None = None
    details: bool | None = None
    decoder_input_details: bool | None = None
    return_full_text: bool | None = None
    best_of: int | None = None
    top_n_tokens: int | None = None
    grammar: dict[str, object] | None = None
    truncate: int | None = None
    typical_p: float | None = None
    watermark: bool | None = None
    adapter_id: str | None = None


class TgiGenerateRequest(WireRequest):
    """``POST /generate``, ``/generate_stream`` and ``/`` (``stream`` picks for ``/``)."""

    inputs: str = Field(min_length=1)
    parameters: TgiParameters = Field(default_factory=TgiParameters)
    stream: bool = False


class TgiToken(BaseModel):
    """One generated token."""

    id: int
    text: str
    logprob: float | None = None
    special: bool = False


class TgiDetails(BaseModel):
    """``details`` of a non-streamed answer."""

    finish_reason: TgiFinishReason
    generated_tokens: int
    seed: int | None = None
    prefill: list[TgiToken] = Field(default_factory=list)
    tokens: list[TgiToken] = Field(default_factory=list)


class TgiGenerateResponse(BaseModel):
    """A non-streamed answer."""

    generated_text: str
    details: TgiDetails | None = None


class TgiStreamDetails(BaseModel):
    """``details`` of the last stream event."""

    finish_reason: TgiFinishReason
    generated_tokens: int
    seed: int | None = None
    input_length: int


class TgiStreamEvent(BaseModel):
    """One SSE event of ``/generate_stream``: a token; the last also has the whole text."""

    index: int
    token: TgiToken
    top_tokens: list[TgiToken] | None = None
    generated_text: str | None = None
    details: TgiStreamDetails | None = None


class TgiInfo(BaseModel):
    """``GET /info``: the served model and its limits, TGI's field names."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_device_type: str
    model_pipeline_tag: str = "text-generation"
    max_concurrent_requests: int
    max_best_of: int = 1
    max_stop_sequences: int = 4
    max_input_tokens: int
    max_total_tokens: int
    validation_workers: int = 1
    max_client_batch_size: int = 1
    router: str = "cria-server"
    version: str
    sha: str | None = None
    docker_label: str | None = None


class TgiError(BaseModel):
    """TGI's error body (and the last event of a stream that failed)."""

    error: str
    error_type: str
