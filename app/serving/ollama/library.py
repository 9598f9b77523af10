"""Ollama's model routes (``/api/tags``, ``/api/show``, ``/api/ps``, ``/api/version``).

Lists show the model library (``/api/tags``: every model, ``/api/ps``: the loaded ones,
until when); a server without a library (an app given one engine) lists that one. A LoRA
adapter follows its base model in ``/api/tags``, named by the adapter, its base in
``details.parent_model``. ``digest`` is an id derived from the file's path, size and
modification time (hashing a multi-GiB file per request would be slow), not the file's sha256.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.engine.router import ModelStatus
from app.engine.types import LoraAdapter, ModelInfo, SamplingParams
from app.models.gguf import read_gguf
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


def adapter_model(adapter: LoraAdapter, base: OllamaModel) -> OllamaModel:
    """A LoRA adapter as ``/api/tags`` lists it: its base model's details, its own file."""
    try:
        size = os.stat(adapter.path).st_size
    except OSError:
        size = 0
    name = f"{adapter.name}:latest"
    details = base.details.model_copy(update={"parent_model": base.name})
    digest = hashlib.sha256(f"{base.digest}\0{adapter.path}\0{size}".encode()).hexdigest()
    return base.model_copy(
        update={"name": name, "model": name, "size": size, "digest": digest, "details": details}
    )


def tags(info: ModelInfo) -> OllamaTags:
    """``GET /api/tags``: the served model and the LoRA adapters on it."""
    base = ollama_model(info)
    return OllamaTags(models=[base, *(adapter_model(a, base) for a in info.adapters)])


def running(info: ModelInfo, expires_in_s: float | None = None) -> OllamaRunning:
    """``GET /api/ps`` for one model: loaded, until when, and how much of it is on a GPU."""
    return OllamaRunning(models=[running_model(info, expires_in_s)])


def running_model(info: ModelInfo, expires_in_s: float | None) -> OllamaRunningModel:
    """A loaded model as ``/api/ps`` lists it (``expires_in_s`` None: it stays loaded)."""
    offload = info.offload
    share = offload.layers_offloaded / offload.layers_total if offload.layers_total else 0.0
    expires = NEVER_EXPIRES if expires_in_s is None else ollama_time(time.time() + expires_in_s)
    return OllamaRunningModel(
        **ollama_model(info).model_dump(),
        expires_at=expires,
        size_vram=int(info.size_bytes * share) if offload.backend != "cpu" else 0,
        context_length=info.n_ctx_slot,
    )


def library_running(statuses: Sequence[ModelStatus]) -> OllamaRunning:
    """``GET /api/ps``: every loaded model of the library."""
    return OllamaRunning(
        models=[
            running_model(status.engine.model_info(), status.expires_in_s)
            for status in statuses
            if status.state == "ready" and status.engine is not None
        ]
    )


def library_tags(statuses: Sequence[ModelStatus]) -> OllamaTags:
    """``GET /api/tags``: every model of the library, from its GGUF header (loaded or not).

    Reads headers (cached by path, size and mtime): call it off the event loop."""
    models = []
    for status in statuses:
        if status.state == "ready" and status.engine is not None:
            info = status.engine.model_info()
            models.append(ollama_model(info).model_copy(update=_named(status.entry.id)))
            models.extend(adapter_model(a, models[-1]) for a in info.adapters)
            continue
        gguf = read_gguf(status.entry.config.model_path)
        details = OllamaModelDetails(
            family=gguf.architecture,
            families=[gguf.architecture],
            parameter_size=parameter_size(gguf.n_params),
            quantization_level=gguf.quantization,
        )
        stat = os.stat(gguf.path)
        key = f"{gguf.path}\0{stat.st_size}\0{stat.st_mtime}".encode()
        models.append(
            OllamaModel(
                **_named(status.entry.id),
                modified_at=ollama_time(stat.st_mtime),
                size=stat.st_size,
                digest=hashlib.sha256(key).hexdigest(),
                details=details,
            )
        )
        models.extend(adapter_model(a, models[-1]) for a in status.entry.config.lora)
    return OllamaTags(models=models)


def _named(model_id: str) -> dict[str, str]:
    return {"name": f"{model_id}:latest", "model": f"{model_id}:latest"}


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
        modelfile=f"FROM {Path(info.path).name}\n",  # the file, never the server's path
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
