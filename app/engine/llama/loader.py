"""``load_backend``: from an EngineConfig to a ready LlamaBackend.

Order: the file's size (its GGUF header was checked by the caller that resolved it,
``app.models.registry``) -> init the backend once and load ggml's
backend modules (GGML_BACKEND_DL builds) -> decide the AMX guard -> plan the GPU offload ->
load the model (backing off to fewer GPU layers, then the CPU, when loading fails) -> create
one context with ``n_slots`` per-sequence KV streams -> load the LoRA adapters (checked
against the model, ``app.engine.llama.lora``).
Every failure is a typed ``ModelNotFound``/``ModelLoadError`` with a readable message;
llama.cpp returns NULL on failure, so nothing here can crash the process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

from app.engine.llama import _lib
from app.engine.llama.backend import LlamaBackend
from app.engine.llama.cpu import AmxDecision, decide_amx_guard, default_threads, read_cpu_facts
from app.engine.llama.devices import list_gpu_devices, load_backends
from app.engine.llama.info import build_model_info
from app.engine.llama.lora import load_adapters
from app.engine.llama.offload import (
    BackendReport,
    ModelFootprint,
    OffloadPlan,
    next_fallback,
    offload_info,
    plan_offload,
)
from app.engine.llama.threads import ThreadGovernor
from app.engine.types import EngineConfig
from app.errors import ModelLoadError, ModelNotFound

logger = logging.getLogger(__name__)

# Flash attention: "auto" resolves to enabled on the CPU backend. It is required for a
# quantized V cache and gives bit-identical logits alone vs batched with per-sequence KV
# streams (see tests/e2e/test_llama_backend.py).
FLASH_ATTN = _lib.FLASH_ATTN_AUTO


def _check_config(config: EngineConfig) -> None:
    problems = []
    if config.n_slots < 1:
        problems.append(f"n_slots must be >= 1 (got {config.n_slots})")
    if config.n_ctx_slot < 1:
        problems.append(f"n_ctx_slot must be >= 1 (got {config.n_ctx_slot})")
    if config.n_batch < 1:
        problems.append(f"n_batch must be >= 1 (got {config.n_batch})")
    if config.kv_cache_type not in _lib.KV_CACHE_TYPES:
        known = ", ".join(_lib.KV_CACHE_TYPES)
        problems.append(f"kv_cache_type {config.kv_cache_type!r} is not one of {known}")
    if problems:
        raise ModelLoadError("Invalid engine settings: " + "; ".join(problems) + ".")


def _native_detail() -> str:
    lines = _lib.take_native_problems()
    return f": {' / '.join(lines[-3:])}" if lines else ""


def _probe_footprint(config: EngineConfig, size: int) -> ModelFootprint:
    """Read the layer count and KV head sizes with a load on the CPU (weights memory-mapped).

    Not ``vocab_only``: after a vocabulary-only load llama.cpp 0.3.36 has no hyperparameters,
    and ``llama_model_n_head`` aborts the process (GGML_ABORT in ``llama_hparams::n_head``).
    """
    params = _lib.model_default_params()
    params.devices = _lib.no_devices()
    params.use_extra_bufts = False
    model = _lib.model_load(config.model_path, params)
    if model is None:
        raise ModelLoadError(f"llama.cpp could not read {config.model_path}{_native_detail()}")
    try:
        n_layer = _lib.model_int(model, "n_layer")
        n_embd, n_head = _lib.model_int(model, "n_embd"), _lib.model_int(model, "n_head")
        n_head_kv = _lib.model_int(model, "n_head_kv")
    finally:
        _lib.model_free(model)
    kv_width = n_embd // max(n_head, 1) * n_head_kv  # K (and V) values per token per layer
    cells = config.n_slots * config.n_ctx_slot
    kv_bytes = int(2 * cells * kv_width * _lib.KV_TYPE_BYTES[config.kv_cache_type])
    return ModelFootprint(n_layer=n_layer, file_bytes=size, kv_bytes_per_layer=kv_bytes)


def _first_plan(config: EngineConfig, size: int, backends: BackendReport) -> OffloadPlan:
    gpu = _lib.supports_gpu_offload() and config.n_gpu_layers != 0
    footprint = _probe_footprint(config, size) if gpu else ModelFootprint(0, size, 0)
    devices = list_gpu_devices() if gpu else []
    return plan_offload(
        config.n_gpu_layers,
        # A GPU build whose GPU backend found no device is still a GPU build: the plan says why.
        gpu_supported=_lib.supports_gpu_offload() or bool(backends.gpu_backends),
        devices=devices,
        footprint=footprint,
        margin_bytes=config.gpu_memory_margin_mb * 1024 * 1024,
        no_device_reason=backends.no_gpu_reason,
    )


def _model_params(plan: OffloadPlan, amx: AmxDecision) -> Any:
    params = _lib.model_default_params()
    params.n_gpu_layers = plan.n_gpu_layers
    # The AMX extra buffer type crashes on first decode (llama.cpp #20824): keep weights in
    # plain CPU buffers wherever AMX could be picked.
    params.use_extra_bufts = not amx.guard
    if plan.device is not None:
        params.split_mode = _lib.SPLIT_MODE_NONE
        params.main_gpu = plan.device.index
    elif _lib.supports_gpu_offload():
        # The CPU plan (asked for, or the last fallback): no GPU for weights, KV or ops.
        params.devices = _lib.no_devices()
    return params


def _context_params(config: EngineConfig, n_threads: int) -> Any:
    params = _lib.context_default_params()
    params.n_ctx = config.n_slots * config.n_ctx_slot
    params.n_seq_max = config.n_slots
    # One KV stream per sequence: each slot gets exactly n_ctx_slot cells and its attention
    # never sees the other sequences' cells, so its logits do not depend on the batch.
    params.kv_unified = False
    params.n_batch = params.n_ubatch = config.n_batch
    params.n_threads = params.n_threads_batch = n_threads
    kv_type = _lib.KV_CACHE_TYPES[config.kv_cache_type]
    params.type_k = params.type_v = kv_type
    quantized_v = config.kv_cache_type not in ("f32", "f16", "bf16")
    params.flash_attn_type = _lib.FLASH_ATTN_ENABLED if quantized_v else FLASH_ATTN
    params.embeddings = False
    params.no_perf = True
    return params


def _load_model(
    config: EngineConfig, plan: OffloadPlan, amx: AmxDecision
) -> tuple[int, OffloadPlan]:
    """Load with ``plan``, backing off on failure; returns the model and the plan that worked."""
    while True:
        model = _lib.model_load(config.model_path, _model_params(plan, amx))
        if model is not None:
            return model, plan
        detail = _native_detail()
        fallback = next_fallback(plan, f"llama.cpp returned no model{detail}")
        if fallback is None:
            raise ModelLoadError(
                f"llama.cpp could not load {config.model_path}{detail or ' (see debug log)'}. "
                "The file may be truncated, corrupt or of an unsupported architecture.",
                param="model",
            )
        logger.warning("%s", fallback.reason)
        plan = fallback


def _create_context(
    config: EngineConfig, model: int, plan: OffloadPlan, amx: AmxDecision
) -> tuple[int, int, OffloadPlan]:
    """Create the context, backing off the offload if that fails; returns (model, ctx, plan)."""
    n_threads = config.n_threads or default_threads()
    while True:
        ctx = _lib.context_init(model, _context_params(config, n_threads))
        if ctx is not None:
            return model, ctx, plan
        detail = _native_detail()
        fallback = next_fallback(plan, f"creating the context failed{detail}")
        _lib.model_free(model)
        if fallback is None:
            cells = config.n_slots * config.n_ctx_slot
            raise ModelLoadError(
                f"llama.cpp could not create a context of {config.n_slots} slots x "
                f"{config.n_ctx_slot} tokens ({cells} KV cells){detail}. Lower n_slots or "
                "n_ctx_slot."
            )
        logger.warning("%s", fallback.reason)
        model, plan = _load_model(config, fallback, amx)


def _check_context(config: EngineConfig, ctx: int) -> tuple[int, int]:
    """The real per-sequence context and batch size.

    llama.cpp pads the per-sequence context up to a multiple of 256 and caps n_batch at n_ctx.
    """
    per_seq, seqs, batch = _lib.n_ctx_seq(ctx), _lib.n_seq_max(ctx), _lib.n_batch(ctx)
    if seqs != config.n_slots or per_seq < config.n_ctx_slot or batch < 1:
        raise ModelLoadError(
            f"llama.cpp made {seqs} sequences of {per_seq} tokens (batch {batch}); asked for "
            f"{config.n_slots} of {config.n_ctx_slot}."
        )
    return per_seq, min(batch, config.n_batch)


def _file_size(path: str) -> int:
    # The GGUF header was checked by whoever resolved the path (app.models.registry); a file
    # that is no model still fails here as a ModelLoadError when llama.cpp cannot read it.
    try:
        return os.stat(path).st_size
    except FileNotFoundError as exc:
        raise ModelNotFound(f"model file {path} not found.", param="model") from exc
    except OSError as exc:
        raise ModelLoadError(f"Could not read {path}: {exc.strerror}.", param="model") from exc


def load_backend(config: EngineConfig, *, amx_guard: bool | None = None) -> LlamaBackend:
    """Load ``config.model_path`` and create its context; the caller owns the backend.

    ``amx_guard`` None decides from the CPU (the default); True/False force it (tests).
    Raises ``ModelNotFound`` for a missing file and ``ModelLoadError`` for anything else.
    """
    _check_config(config)
    size = _file_size(config.model_path)
    _lib.backend_init()
    backends = load_backends()  # GGML_BACKEND_DL builds: register the CPU (and GPU) modules
    _lib.take_native_problems()
    cpu = read_cpu_facts()
    amx = decide_amx_guard(cpu, _lib.build_has_amx(), amx_guard)
    model, plan = _load_model(config, _first_plan(config, size, backends), amx)
    model, ctx, plan = _create_context(config, model, plan, amx)
    try:
        n_ctx_slot, n_batch = _check_context(config, ctx)
        plan = replace(plan, layers_total=_lib.model_int(model, "n_layer") + 1)
        offload = offload_info(plan, cpu_name=cpu.name, amx_guard_reason=amx.reason)
        info = build_model_info(
            model, config, n_ctx_slot=n_ctx_slot, size_bytes=size, offload=offload
        )
        adapters = load_adapters(
            model, config.lora, architecture=info.architecture, base_name=info.name
        )
        n_threads = config.n_threads or default_threads()
        governor = ThreadGovernor(n_threads, adaptive=config.n_threads is None)
        backend = LlamaBackend(
            governor=governor,
            model=model,
            ctx=ctx,
            n_slots=config.n_slots,
            n_ctx_slot=n_ctx_slot,
            n_batch=n_batch,
            adapters=adapters,
        )
    except BaseException:
        _lib.context_free(ctx)
        _lib.model_free(model)
        raise
    backend.set_info(info)
    _lib.take_native_problems()  # load-time warnings are logged; decode errors start fresh
    logger.info("loaded %s: %s", config.model_path, offload.reason)
    return backend
