"""CRIA's ``/health`` and ``/model-card`` bodies from the engine's facts."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata

from app.engine.router import ModelStatus
from app.engine.types import EngineHealth, EngineStats, ModelInfo, OffloadInfo
from app.schemas.cria import Health, ModelCard, ModelHealth, OffloadState


def offload_state(offload: OffloadInfo) -> OffloadState:
    """Where the model runs, for health and the model card."""
    return OffloadState(
        backend=offload.backend,
        device=offload.device_name,
        gpu_layers=offload.layers_offloaded,
        total_layers=offload.layers_total,
        requested=offload.requested,
        reason=offload.reason,
        fallback=offload.fallback,
        amx_guard=offload.amx_guard,
    )


def _server_version() -> str:
    try:
        return metadata.version("cria-server")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def model_card(info: ModelInfo) -> ModelCard:
    """CRIA's model card, filled from GGUF metadata (general.*) and the engine."""
    meta = info.metadata
    return ModelCard(
        model_name=info.name,
        version=meta.get("general.version") or _server_version(),
        description=meta.get("general.description") or meta.get("general.name") or info.description,
        developed_by=meta.get("general.organization") or meta.get("general.author") or "unknown",
        language=meta.get("general.languages") or meta.get("general.language") or "unknown",
        architecture=info.architecture,
        quantization=info.quantization,
        parameters=info.n_params,
        size_bytes=info.size_bytes,
        context_length=info.n_ctx_slot,
        context_length_train=info.n_ctx_train,
        slots=info.n_slots,
        file=info.path.rsplit("/", 1)[-1],
        offload=offload_state(info.offload),
    )


def health(state: EngineHealth, stats: EngineStats | None, info: ModelInfo | None) -> Health:
    """The health body: status and reason, the engine's load, the offload decision."""
    status = "ok" if state.ready else state.state
    body = Health(status=status, reason=state.reason, restarts=state.restarts)
    if info is not None:
        body.model = info.name
        body.offload = offload_state(info.offload)
        body.adapters = [adapter.name for adapter in info.adapters]
    if stats is not None:
        body.slots_busy = stats.slots_busy
        body.slots_total = stats.slots_total
        body.queue_length = stats.queue_length
        body.max_queue = stats.max_queue
        body.requests_active = stats.requests_active
    return body


def model_health(statuses: Sequence[ModelStatus]) -> list[ModelHealth]:
    """Each library model's state for ``/health``."""
    return [
        ModelHealth(
            id=status.entry.id,
            state=status.state,
            pinned=status.entry.pinned,
            memory_estimate_bytes=status.entry.memory_bytes,
            vram_estimate_bytes=status.entry.vram_bytes,
            restarts=status.restarts,
            context_length=status.entry.config.n_ctx_slot,
            slots=status.entry.config.n_slots,
            load_s=status.load_s,
            expires_in_s=status.expires_in_s,
            last_error=status.last_error,
        )
        for status in statuses
    ]
