"""GPU offload planning: how many layers to put on which device, and how to back off.

Pure functions over plain data (a list of devices with their free memory and the model's
size), so every decision is unit-tested without a GPU. The loader asks ``plan_offload``
for a first plan and, when llama.cpp fails to load with it, ``next_fallback`` for the next
one: half the layers, then the CPU.

Layer counts follow llama.cpp's ``n_gpu_layers``: a model with ``n_layer`` repeating
blocks has ``n_layer + 1`` offloadable layers (the output layer counts as one).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from app.engine.types import GpuLayers, OffloadInfo

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuDevice:
    """A GPU as ggml's backend device API reports it."""

    index: int  # position among the GPU devices (llama_model_params.main_gpu)
    name: str  # ggml device name, e.g. "CUDA0"
    description: str  # e.g. "NVIDIA H100 80GB HBM3"
    backend: str  # lower-case backend name: "cuda", "metal", "vulkan", ...
    free_bytes: int
    total_bytes: int


# GPU backend modules a GGML_BACKEND_DL build can ship, by ggml backend name, with the name
# people know them by.
GPU_MODULES: Mapping[str, str] = {
    "cuda": "CUDA",
    "hip": "ROCm",
    "vulkan": "Vulkan",
    "sycl": "SYCL",
    "musa": "MUSA",
    "opencl": "OpenCL",
}


@dataclass(frozen=True)
class BackendReport:
    """What ``load_backends`` found: the build's GPU backends and why any has no device."""

    dynamic: bool  # a GGML_BACKEND_DL build: the backends are modules loaded at start
    gpu_backends: tuple[str, ...] = ()  # GPU backends of the build, e.g. ("cuda",)
    registered: Mapping[str, int] = field(default_factory=dict)  # backend -> devices
    problems: Mapping[str, str] = field(default_factory=dict)  # backend -> why no device

    @property
    def no_gpu_reason(self) -> str | None:
        """Why the GPU build has no GPU, e.g. "CUDA build, but no CUDA device (driver not
        found)"; None when a GPU registered or the build has no GPU backend."""
        if not self.problems or any(self.registered.get(b, 0) for b in self.gpu_backends):
            return None
        parts = []
        for backend, why in self.problems.items():
            label = GPU_MODULES.get(backend, backend)
            parts.append(f"{label} build, but no {label} device ({why})")
        return "; ".join(parts)


@dataclass(frozen=True)
class ModelFootprint:
    """What the planner needs to know about the model and its KV cache."""

    n_layer: int  # repeating blocks (llama_model_n_layer)
    file_bytes: int  # size of the GGUF file, spread evenly over the layers
    kv_bytes_per_layer: int  # KV cache of one layer for all slots together

    @property
    def layers_total(self) -> int:
        return self.n_layer + 1

    @property
    def bytes_per_layer(self) -> int:
        """Weights plus KV cache of one offloaded layer (an estimate)."""
        return -(-self.file_bytes // self.layers_total) + self.kv_bytes_per_layer


@dataclass(frozen=True)
class OffloadPlan:
    """One attempt: ``n_gpu_layers`` for llama.cpp on ``device`` (None: the CPU)."""

    n_gpu_layers: int
    device: GpuDevice | None
    layers_total: int
    requested: str
    reason: str
    fallback: bool = False

    @property
    def backend(self) -> str:
        return self.device.backend if self.device is not None else "cpu"


def describe_request(requested: GpuLayers) -> str:
    """The setting as text: "auto", "all" or the number."""
    return str(requested)


def pick_device(devices: Sequence[GpuDevice]) -> GpuDevice | None:
    """The device with the most free memory (the first one on a tie)."""
    best: GpuDevice | None = None
    for dev in devices:
        if best is None or dev.free_bytes > best.free_bytes:
            best = dev
    return best


def layers_that_fit(device: GpuDevice, footprint: ModelFootprint, margin_bytes: int) -> int:
    """How many layers fit in the device's free memory, keeping ``margin_bytes`` free."""
    room = device.free_bytes - margin_bytes
    if room <= 0 or footprint.bytes_per_layer <= 0:
        return 0
    return min(footprint.layers_total, room // footprint.bytes_per_layer)


def _cpu_plan(
    requested: GpuLayers, footprint: ModelFootprint, reason: str, fallback: bool
) -> OffloadPlan:
    return OffloadPlan(
        0, None, footprint.layers_total, describe_request(requested), reason, fallback
    )


def plan_offload(
    requested: GpuLayers,
    *,
    gpu_supported: bool,
    devices: Sequence[GpuDevice],
    footprint: ModelFootprint,
    margin_bytes: int,
    no_device_reason: str | None = None,
) -> OffloadPlan:
    """The first plan for ``requested`` (an int, "all" or "auto").

    A GPU-less build, no GPU device, or a request of 0 layers gives the CPU; when the build has
    a GPU backend that found no device, ``no_device_reason`` says why ("CUDA build, but no CUDA
    device (driver not found)") and becomes the plan's reason. "auto" puts as
    many layers as fit in free memory minus the margin; "all" and numbers are taken as asked
    (capped at the layer count) and backed off only if loading fails.
    """
    if requested == 0:
        return _cpu_plan(requested, footprint, "n_gpu_layers is 0: running on the CPU", False)
    # Explicit requests that end on the CPU are fallbacks; "auto" choosing the CPU is not.
    explicit = requested != "auto"
    if not gpu_supported:
        return _cpu_plan(requested, footprint, "this llama.cpp build has no GPU backend", explicit)
    device = pick_device(devices)
    if device is None:
        why = no_device_reason or "no GPU device was found"
        return _cpu_plan(requested, footprint, f"{why}: running on the CPU", explicit)
    if requested == "auto":
        return _plan_auto(device, footprint, margin_bytes)
    total = footprint.layers_total
    layers = total if requested == "all" or requested < 0 else min(requested, total)
    reason = f"{layers} of {total} layers on {_where(device)} as asked"
    return OffloadPlan(layers, device, total, describe_request(requested), reason)


def _where(device: GpuDevice) -> str:
    return f"{device.description or device.name} ({device.free_bytes // MIB} MiB free)"


def _plan_auto(device: GpuDevice, footprint: ModelFootprint, margin_bytes: int) -> OffloadPlan:
    total = footprint.layers_total
    fit = layers_that_fit(device, footprint, margin_bytes)
    if fit <= 0:
        reason = (
            f"not enough free memory on {_where(device)} for one layer "
            f"({footprint.bytes_per_layer // MIB} MiB each, "
            f"{margin_bytes // MIB} MiB kept free)"
        )
        return _cpu_plan("auto", footprint, reason, False)
    how = "all layers fit" if fit == total else f"{fit} of {total} layers fit"
    reason = f"auto: {how} on {_where(device)}, keeping {margin_bytes // MIB} MiB free"
    return OffloadPlan(fit, device, total, "auto", reason)


def next_fallback(plan: OffloadPlan, failure: str) -> OffloadPlan | None:
    """The plan to try after ``plan`` failed to load: half the layers, then the CPU.

    Returns None when ``plan`` already was the CPU (nothing left to back off to).
    """
    if plan.device is None or plan.n_gpu_layers <= 0:
        return None
    half = plan.n_gpu_layers // 2
    where = plan.device.description or plan.device.name
    tried = f"loading {plan.n_gpu_layers} layers on {where} failed ({failure})"
    if half >= 1:
        return replace(
            plan, n_gpu_layers=half, reason=f"{tried}; using {half} layers", fallback=True
        )
    return replace(
        plan, n_gpu_layers=0, device=None, reason=f"{tried}; running on the CPU", fallback=True
    )


def offload_info(plan: OffloadPlan, *, cpu_name: str, amx_guard_reason: str | None) -> OffloadInfo:
    """The OffloadInfo to report for the plan that loaded."""
    reason = plan.reason
    if amx_guard_reason is not None:
        reason += (
            f"; AMX guard on: {amx_guard_reason}, so llama.cpp's AMX and repacked weight "
            "buffers are off"
        )
    device_name = plan.device.description or plan.device.name if plan.device else cpu_name
    return OffloadInfo(
        backend=plan.backend,
        device_name=device_name,
        layers_offloaded=min(plan.n_gpu_layers, plan.layers_total),
        layers_total=plan.layers_total,
        requested=plan.requested,
        reason=reason,
        fallback=plan.fallback,
        amx_guard=amx_guard_reason is not None,
        device_total_bytes=plan.device.total_bytes if plan.device else None,
        device_free_bytes=plan.device.free_bytes if plan.device else None,
    )
