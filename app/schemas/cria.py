"""CRIA's own wire types: the frontend's prompt body, the model card and health."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.common import WireRequest


class CriaPromptRequest(WireRequest):
    """CRIA's frontend body on ``POST /v{N}/chat/completions``: just the user's text."""

    prompt: str = Field(min_length=1)


class OffloadState(BaseModel):
    """Where the model runs: backend, device, layers on the GPU and why."""

    backend: str
    device: str | None
    gpu_layers: int
    total_layers: int
    requested: str
    reason: str
    fallback: bool
    amx_guard: bool


class ModelCard(BaseModel):
    """CRIA's model card, plus the facts a user wants about the served model."""

    model_name: str
    version: str
    description: str
    developed_by: str
    language: str
    architecture: str
    quantization: str
    parameters: int
    size_bytes: int
    context_length: int
    context_length_train: int
    slots: int
    file: str
    offload: OffloadState


class ModelHealth(BaseModel):
    """One model of the library in ``/health``."""

    id: str
    state: Literal["ready", "loading", "unloaded", "restarting", "failed"]
    pinned: bool = False
    memory_estimate_bytes: int = 0  # in RAM
    vram_estimate_bytes: int = 0  # on the GPU (the offloaded layers' share)
    restarts: int = 0  # times its worker process was restarted after a crash
    context_length: int | None = None  # context tokens per slot (its preset's or the server's)
    slots: int | None = None
    load_s: float | None = None
    expires_in_s: float | None = None
    last_error: str | None = None


class Health(BaseModel):
    """``GET /health``: ready or not, and the engine's load."""

    status: Literal["ok", "loading", "draining", "restarting", "failed", "dead", "stopped"]
    reason: str | None = None
    restarts: int = 0  # times the engine process was restarted after it died
    model: str | None = None
    slots_busy: int = 0
    slots_total: int = 0
    queue_length: int = 0
    max_queue: int = 0
    requests_active: int = 0
    offload: OffloadState | None = None
    models: list[ModelHealth] = []  # the model library (the default model first)
    adapters: list[str] = Field(
        default_factory=list, description="LoRA adapters loaded on the model (their model ids)."
    )
