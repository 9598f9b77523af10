"""The one settings tree: flags > CRIA_* environment variables > config file > defaults.

Every field has a default and a description (the description is the ``--help`` text).
Nothing here reads the environment at import time: ``Settings()`` reads it when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.engine.types import EngineConfig, GpuLayers

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS_DIR = REPO_ROOT / "models"
DEFAULT_MODEL = "smollm2"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


def _split_list(value: object) -> object:
    """Accept ``a,b`` from the environment as well as a real list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """cria-server settings."""

    model_config = SettingsConfigDict(
        env_prefix="CRIA_", extra="forbid", validate_default=True, populate_by_name=True
    )

    # --- model -------------------------------------------------------------------------
    model: str = Field(
        DEFAULT_MODEL,
        description="Model to serve: a .gguf path, a name in the models folder, "
        "hf://owner/repo/file.gguf, or the built-in 'smollm2'.",
    )
    model_alias: str | None = Field(
        None, description="Model id shown to clients (default: the file name without .gguf)."
    )
    models_dir: Path = Field(
        DEFAULT_MODELS_DIR, description="Folder where models are looked up and downloaded."
    )
    # --- server ------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind.")
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="API key clients must send (Bearer or X-Api-Key); repeat for several. "
        "Empty: no authentication.",
    )
    cors_origin: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "http://localhost",
            "http://127.0.0.1",
            "http://localhost:3000",
            "http://127.0.0.1:3000",
            "http://localhost:8000",
            "http://127.0.0.1:8000",
        ],
        description="Origin allowed by CORS; repeat for several ('*' allows any).",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body accepted.")
    max_tokens_limit: int = Field(
        4096, ge=1, description="Cap on max_tokens a request may ask for."
    )
    default_max_tokens: int | None = Field(
        None, ge=1, description="max_tokens when a request sets none (default: until the slot is full)."
    )
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT,
        description="System prompt used when a chat request has none ('' for none).",
    )
    keepalive_s: float = Field(
        10.0, gt=0, description="Seconds between SSE keep-alive comments while a stream waits."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
    # --- engine ------------------------------------------------------------------------
    parallel: int = Field(4, ge=1, le=64, description="Slots: sequences generated in parallel.")
    ctx_size: int = Field(2048, ge=64, description="Context tokens per slot.")
    n_gpu_layers: str = Field(
        "auto",
        description="Layers to offload to the GPU: a number, 'all', or 'auto' (as many as fit).",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores).")
    batch_size: int = Field(
        512, ge=16, description="Max tokens per decode step (prompt chunks plus decode tokens)."
    )
    kv_cache_type: Literal["f16", "f32", "bf16", "q8_0", "q4_0"] = Field(
        "f16", description="KV cache data type."
    )
    max_queue: int = Field(
        64, ge=0, description="Requests allowed to wait for a slot; more get 429."
    )
    prompt_cache: bool = Field(
        True, description="Reuse a slot's KV cache for a prompt prefix shared with a past request."
    )
    seed: int | None = Field(None, description="Default sampling seed (default: random).")

    @field_validator("api_key", "cors_origin", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("n_gpu_layers")
    @classmethod
    def _gpu_layers(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "all") or (value.lstrip("-").isdigit() and int(value) >= -1):
            return value
        raise ValueError("n_gpu_layers must be a number, 'all' or 'auto'")

    def gpu_layers(self) -> GpuLayers:
        """``n_gpu_layers`` as the engine takes it (-1 means all)."""
        if self.n_gpu_layers == "auto":
            return "auto"
        if self.n_gpu_layers == "all" or int(self.n_gpu_layers) < 0:
            return "all"
        return int(self.n_gpu_layers)

    def engine_config(self, model_path: Path) -> EngineConfig:
        """The engine's view of these settings, for a resolved model file."""
        return EngineConfig(
            model_path=str(model_path),
            model_alias=self.model_alias,
            n_slots=self.parallel,
            n_ctx_slot=self.ctx_size,
            n_threads=self.threads,
            n_batch=self.batch_size,
            kv_cache_type=self.kv_cache_type,
            n_gpu_layers=self.gpu_layers(),
            max_queue=self.max_queue,
            prompt_cache=self.prompt_cache,
            seed=self.seed,
        )
