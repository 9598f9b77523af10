"""Ollama's model routes (``/api/tags``, ``/api/show``, ``/api/ps``, ``/api/version``).

This server has one model, always loaded: every list has that one entry. ``digest`` is an
id derived from the file's path, size and modification time (hashing a multi-GiB file per
request would be slow), not the file's sha256.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from app.engine.types import ModelInfo, SamplingParams
from app.schemas.ollama import (
    OllamaModel,
    OllamaModelDetails,
    OllamaRunning,
    OllamaRunningModel,
    OllamaShow,
    OllamaTags,
    OllamaVersion,
)
from app.serving.ollama.chat import ollama_time

OLLAMA_API_VERSION = "0.9.0"  # the Ollama release whose API these routes follow
NEVER_EXPIRES = "2318-01-01T00:00:00Z"  # the model stays loaded (Ollama's keep_alive < 0)


def _modified(info: ModelInfo) -> float:
    try:
        return os.stat(info.path).st_mtime
    except OSError:
        return 0.0


def _digest(info: ModelInfo) -> str:
    key = f"{info.path}\0{info.size_bytes}\0{_modified(info)}".encode()
    return hashlib.sha256(key).hexdigest()


def parameter_size(n_params: int) -> str:
    """Ollama's short parameter count: ``134.52M``, ``1.24B``."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n_params >= scale:
            return f"{n_params / scale:.2f}{unit}"
    return str(n_params)


def model_details(info: ModelInfo) -> OllamaModelDetails:
    """``details``: family, size and quantization of the served model."""
    return OllamaModelDetails(
        family=info.architecture,
        families=[info.architecture],
        parameter_size=parameter_size(info.n_params),
        quantization_level=info.quantization,
    )


def ollama_model(info: ModelInfo) -> OllamaModel:
    """The served model as ``/api/tags`` lists it (``name:latest``)."""
    name = f"{info.name}:latest"
    return OllamaModel(
        name=name,
        model=name,
        modified_at=ollama_time(_modified(info)),
        size=info.size_bytes,
        digest=_digest(info),
        details=model_details(info),
    )


def tags(info: ModelInfo) -> OllamaTags:
    """``GET /api/tags``."""
    return OllamaTags(models=[ollama_model(info)])


def running(info: ModelInfo) -> OllamaRunning:
    """``GET /api/ps``: the model, loaded for good, and how much of it is on a GPU."""
    offload = info.offload
    share = offload.layers_offloaded / offload.layers_total if offload.layers_total else 0.0
    entry = OllamaRunningModel(
        **ollama_model(info).model_dump(),
        expires_at=NEVER_EXPIRES,
        size_vram=int(info.size_bytes * share) if offload.backend != "cpu" else 0,
        context_length=info.n_ctx_slot,
    )
    return OllamaRunning(models=[entry])


def _parameters() -> str:
    defaults = SamplingParams()
    keys = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty")
    return "\n".join(f"{key:<16}{getattr(defaults, key)}" for key in keys)


def show(info: ModelInfo, *, embeddings: bool) -> OllamaShow:
    """``POST /api/show``: details, default parameters, template and GGUF metadata."""
    arch = info.architecture
    model_info: dict[str, Any] = dict(info.metadata)
    model_info.update(
        {
            "general.architecture": arch,
            "general.parameter_count": info.n_params,
            f"{arch}.context_length": info.n_ctx_train,
        }
    )
    return OllamaShow(
        modelfile=f"FROM {info.path}\n",
        parameters=_parameters(),
        template=info.chat_template or "",
        details=model_details(info),
        model_info=model_info,
        capabilities=["completion", "embedding"] if embeddings else ["completion"],
        modified_at=ollama_time(_modified(info)),
    )


def version() -> OllamaVersion:
    """``GET /api/version``."""
    return OllamaVersion(version=OLLAMA_API_VERSION)
