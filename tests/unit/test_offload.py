"""GPU offload planning and fallback decisions, with fake device lists (no GPU needed)."""

from __future__ import annotations

import pytest

from app.engine.llama.offload import (
    MIB,
    BackendReport,
    GpuDevice,
    ModelFootprint,
    OffloadPlan,
    layers_that_fit,
    next_fallback,
    offload_info,
    pick_device,
    plan_offload,
)
from app.engine.types import GpuLayers

# 30 blocks + output = 31 layers; 31 MiB of weights -> 1 MiB each, plus 1 MiB KV per layer.
FOOTPRINT = ModelFootprint(n_layer=30, file_bytes=31 * MIB, kv_bytes_per_layer=1 * MIB)


def gpu(index: int, free_mib: int, *, name: str = "CUDA", backend: str = "cuda") -> GpuDevice:
    return GpuDevice(
        index=index,
        name=f"{name}{index}",
        description=f"Fake GPU {index}",
        backend=backend,
        free_bytes=free_mib * MIB,
        total_bytes=max(free_mib, 1) * 2 * MIB,
    )


def plan(
    requested: GpuLayers,
    devices: list[GpuDevice],
    *,
    margin_mib: int = 10,
    gpu_supported: bool = True,
) -> OffloadPlan:
    return plan_offload(
        requested,
        gpu_supported=gpu_supported,
        devices=devices,
        footprint=FOOTPRINT,
        margin_bytes=margin_mib * MIB,
    )


def test_footprint_counts_output_layer_and_kv() -> None:
    assert FOOTPRINT.layers_total == 31
    assert FOOTPRINT.bytes_per_layer == 2 * MIB


@pytest.mark.parametrize("requested", ["auto", "all", 10, -1])
def test_build_without_gpu_backend_runs_on_cpu(requested: GpuLayers) -> None:
    p = plan(requested, [gpu(0, 80_000)], gpu_supported=False)
    assert p.n_gpu_layers == 0
    assert p.device is None
    assert p.backend == "cpu"
    assert p.reason == "this llama.cpp build has no GPU backend"
    # Asking for GPU layers explicitly and not getting them is a fallback; auto is not.
    assert p.fallback is (requested != "auto")


def test_no_device_found_runs_on_cpu() -> None:
    p = plan("all", [])
    assert (p.n_gpu_layers, p.device, p.fallback) == (0, None, True)
    assert "no GPU device" in p.reason
    assert plan("auto", []).fallback is False


def test_zero_layers_means_cpu_even_with_a_gpu() -> None:
    p = plan(0, [gpu(0, 80_000)])
    assert p.n_gpu_layers == 0
    assert p.device is None
    assert not p.fallback


def test_pick_device_with_most_free_memory() -> None:
    devices = [gpu(0, 1000), gpu(1, 5000), gpu(2, 3000)]
    picked = pick_device(devices)
    assert picked is not None
    assert picked.index == 1
    assert pick_device([]) is None
    assert plan("all", devices).device == devices[1]


def test_auto_offloads_everything_when_it_fits() -> None:
    p = plan("auto", [gpu(0, 80_000)])
    assert p.n_gpu_layers == 31
    assert p.backend == "cuda"
    assert "all layers fit" in p.reason
    assert not p.fallback


def test_auto_offloads_what_fits_after_the_margin() -> None:
    # 30 MiB free - 10 MiB margin = 20 MiB -> 10 layers of 2 MiB.
    p = plan("auto", [gpu(0, 30)], margin_mib=10)
    assert p.n_gpu_layers == 10
    assert "10 of 31 layers fit" in p.reason
    assert layers_that_fit(gpu(0, 31), FOOTPRINT, 10 * MIB) == 10  # 21 MiB: partial layer dropped


def test_auto_with_no_room_runs_on_cpu() -> None:
    p = plan("auto", [gpu(0, 11)], margin_mib=10)
    assert p.n_gpu_layers == 0
    assert p.device is None
    assert "not enough free memory" in p.reason


@pytest.mark.parametrize(("requested", "expected"), [("all", 31), (-1, 31), (12, 12), (500, 31)])
def test_explicit_layer_counts_are_taken_and_capped(requested: GpuLayers, expected: int) -> None:
    p = plan(requested, [gpu(0, 1)])  # explicit requests ignore the memory estimate
    assert p.n_gpu_layers == expected
    assert p.requested == str(requested)


def test_fallback_halves_then_goes_to_cpu() -> None:
    p: OffloadPlan | None = plan("all", [gpu(0, 80_000)])
    steps = []
    while p is not None:
        steps.append(p.n_gpu_layers)
        p = next_fallback(p, "out of memory")
    assert steps == [31, 15, 7, 3, 1, 0]


def test_fallback_reason_says_what_failed() -> None:
    first = plan(8, [gpu(0, 80_000)])
    second = next_fallback(first, "cudaMalloc failed")
    assert second is not None
    assert second.fallback
    assert second.n_gpu_layers == 4
    assert "loading 8 layers on Fake GPU 0 failed (cudaMalloc failed)" in second.reason
    cpu = next_fallback(plan(1, [gpu(0, 80_000)]), "oom")
    assert cpu is not None
    assert (cpu.n_gpu_layers, cpu.device, cpu.backend) == (0, None, "cpu")
    assert cpu.reason.endswith("running on the CPU")
    assert next_fallback(cpu, "oom") is None


def test_offload_info_on_cpu_names_the_cpu_and_the_amx_guard() -> None:
    p = plan("auto", [], gpu_supported=False)
    info = offload_info(p, cpu_name="Intel(R) Xeon(R)", amx_guard_reason="the CPU reports AMX")
    assert info.backend == "cpu"
    assert info.device_name == "Intel(R) Xeon(R)"
    assert (info.layers_offloaded, info.layers_total) == (0, 31)
    assert info.amx_guard
    assert "AMX guard on: the CPU reports AMX" in info.reason


def test_offload_info_on_gpu() -> None:
    p = plan("auto", [gpu(0, 30)], margin_mib=10)
    info = offload_info(p, cpu_name="some cpu", amx_guard_reason=None)
    assert info.backend == "cuda"
    assert info.device_name == "Fake GPU 0"
    assert (info.layers_offloaded, info.layers_total, info.requested) == (10, 31, "auto")
    assert not info.amx_guard
    assert not info.fallback


# --- a GPU build on a host without that GPU ----------------------------------------------------
NO_DRIVER = "CUDA build, but no CUDA device (driver not found)"


@pytest.mark.parametrize(("requested", "fallback"), [("auto", False), ("all", True), (12, True)])
def test_gpu_build_without_device_runs_on_cpu_and_says_why(
    requested: GpuLayers, fallback: bool
) -> None:
    p = plan_offload(
        requested,
        gpu_supported=True,
        devices=[],
        footprint=FOOTPRINT,
        margin_bytes=0,
        no_device_reason=NO_DRIVER,
    )
    assert (p.backend, p.n_gpu_layers, p.device) == ("cpu", 0, None)
    assert p.reason == f"{NO_DRIVER}: running on the CPU"
    assert p.fallback is fallback  # "auto" choosing the CPU is no fallback; asking for GPU is
    info = offload_info(p, cpu_name="Some CPU", amx_guard_reason=None)
    assert (info.backend, info.device_name, info.layers_offloaded) == ("cpu", "Some CPU", 0)


def test_backend_report_reason_names_the_backend_and_the_cause() -> None:
    report = BackendReport(
        dynamic=True,
        gpu_backends=("cuda",),
        registered={"cpu": 1, "cuda": 0},
        problems={"cuda": "driver not found"},
    )
    assert report.no_gpu_reason == NO_DRIVER
    two = BackendReport(
        dynamic=True,
        gpu_backends=("cuda", "vulkan"),
        registered={"cpu": 1},
        problems={"cuda": "driver not found", "vulkan": "its module did not load: x"},
    )
    assert two.no_gpu_reason == (
        f"{NO_DRIVER}; Vulkan build, but no Vulkan device (its module did not load: x)"
    )


@pytest.mark.parametrize(
    "report",
    [
        BackendReport(dynamic=False),  # the CPU build
        BackendReport(dynamic=True, registered={"cpu": 1}),  # a DL build without GPU modules
        BackendReport(True, ("cuda",), {"cpu": 1, "cuda": 1}),  # the GPU is there
    ],
)
def test_backend_report_without_a_problem_has_no_reason(report: BackendReport) -> None:
    assert report.no_gpu_reason is None


def test_offload_info_keeps_the_gpu_memory_seen_at_load() -> None:
    p = plan("auto", [gpu(0, 100)])
    info = offload_info(p, cpu_name="cpu", amx_guard_reason=None)
    assert (info.device_free_bytes, info.device_total_bytes) == (100 * MIB, 200 * MIB)
    cpu = offload_info(plan(0, [gpu(0, 100)]), cpu_name="cpu", amx_guard_reason=None)
    assert (cpu.device_free_bytes, cpu.device_total_bytes) == (None, None)
