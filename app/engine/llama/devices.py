"""GPU devices through ggml's backend device API (ctypes on the bundled libggml).

llama-cpp-python does not bind ``ggml_backend_dev_*``; these functions live in
``libggml.so`` (registry: count/get, loading backend modules) and ``libggml-base.so`` (name,
description, type, memory, backend reg).

Builds made with ``GGML_BACKEND_DL`` (``make cuda``, ``Dockerfile.cuda``) register no backend
by themselves: ``load_backends`` loads the modules next to libggml (``libggml-cuda.so``,
``libggml-cpu*.so``), after the CUDA runtime libraries from the ``nvidia-*`` wheels. A GPU
module that cannot start (no driver, no device) registers nothing or no device, and
``load_backends`` says why, so the server runs on the CPU with that reason.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from app.engine.llama import _lib
from app.engine.llama.offload import GPU_MODULES, BackendReport, GpuDevice

logger = logging.getLogger(__name__)

DEV_TYPE_GPU = 1  # GGML_BACKEND_DEVICE_TYPE_GPU
DEV_TYPE_IGPU = 2  # GGML_BACKEND_DEVICE_TYPE_IGPU


def _linked_copy(stem: str) -> Path:
    """The file of ``stem`` that libllama links (``libggml.so.0``), not another copy of it.

    Wheels cannot hold symlinks, so llama_cpp/lib has ``libggml.so``, ``libggml.so.0`` and
    ``libggml.so.0.x.y`` as separate files: loading another copy than libllama's would give
    a second, separate backend registry.
    """
    lib_dir = Path(_lib.LIB_DIR)
    versioned = sorted(lib_dir.glob(f"{stem}.so.*"), key=lambda p: len(p.name))
    return versioned[0] if versioned else lib_dir / f"{stem}.so"


class _GgmlDeviceApi:
    """The few ggml device functions we need, typed."""

    def __init__(self) -> None:
        registry = ctypes.CDLL(str(_linked_copy("libggml")))
        base = ctypes.CDLL(str(_linked_copy("libggml-base")))
        vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        self.count = self._bind(registry, "ggml_backend_dev_count", [], sz)
        self.get = self._bind(registry, "ggml_backend_dev_get", [sz], vp)
        self.name = self._bind(base, "ggml_backend_dev_name", [vp], cp)
        self.description = self._bind(base, "ggml_backend_dev_description", [vp], cp)
        self.type = self._bind(base, "ggml_backend_dev_type", [vp], ctypes.c_int)
        self.memory = self._bind(
            base, "ggml_backend_dev_memory", [vp, ctypes.POINTER(sz), ctypes.POINTER(sz)], None
        )
        self.reg = self._bind(base, "ggml_backend_dev_backend_reg", [vp], vp)
        self.reg_name = self._bind(base, "ggml_backend_reg_name", [vp], cp)
        self.reg_dev_count = self._bind(base, "ggml_backend_reg_dev_count", [vp], sz)
        self.reg_count = self._bind(registry, "ggml_backend_reg_count", [], sz)
        self.reg_get = self._bind(registry, "ggml_backend_reg_get", [sz], vp)
        self.load_all_from_path = self._bind(
            registry, "ggml_backend_load_all_from_path", [cp], None
        )

    @staticmethod
    def _bind(lib: ctypes.CDLL, symbol: str, argtypes: list[type], restype: type | None) -> Any:
        fn = getattr(lib, symbol)
        fn.argtypes = argtypes
        fn.restype = restype
        return fn


@cache
def _api() -> _GgmlDeviceApi:
    return _GgmlDeviceApi()


def _text(raw: object) -> str:
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else ""


# Shared libraries of the CUDA runtime that libggml-cuda.so needs, in load order; pip's
# nvidia-cuda-runtime and nvidia-cublas wheels put them in nvidia/cu13/lib (CUDA 13) or
# nvidia/{cuda_runtime,cublas}/lib (CUDA 12).
CUDA_RUNTIME_LIBS = ("libcudart.so", "libcublasLt.so", "libcublas.so")
CUDA_DRIVER_LIB = "libcuda.so.1"


def nvidia_lib_dirs() -> list[Path]:
    """Folders of pip's nvidia-* wheels that hold shared libraries (CUDA 13 layout first)."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    dirs: list[Path] = []
    for root in map(Path, spec.submodule_search_locations):
        dirs += [root / "cu13" / "lib", root / "cuda_runtime" / "lib", root / "cublas" / "lib"]
    return [d for d in dirs if d.is_dir()]


def preload_cuda_runtime() -> list[str]:
    """Load cudart and cuBLAS from the nvidia-* wheels, globally, so libggml-cuda.so finds them.

    Returns the files loaded; none when the wheels are not installed (then the system's
    libraries, e.g. a CUDA image's, are found the usual way).
    """
    loaded = []
    for name in CUDA_RUNTIME_LIBS:
        for folder in nvidia_lib_dirs():
            candidates = sorted(folder.glob(name + ".*"))
            if not candidates:
                continue
            try:
                ctypes.CDLL(str(candidates[0]), mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                logger.debug("cannot preload %s: %s", candidates[0], exc)
                continue
            loaded.append(str(candidates[0]))
            break
    return loaded


def _short_dl_error(exc: OSError) -> str:
    """The interesting part of a dlopen error: "libcublas.so.13: cannot open shared ..."."""
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("/") and ": " in text else text


def diagnose_gpu_module(backend: str, module: Path, native: list[str]) -> str:
    """Why the GPU backend ``backend`` (module file ``module``) registered no device."""
    try:
        ctypes.CDLL(str(module))
    except OSError as exc:
        return f"its module did not load: {_short_dl_error(exc)}"
    if backend == "cuda":
        try:
            ctypes.CDLL(CUDA_DRIVER_LIB)
        except OSError:
            return "driver not found"
    said = [line for line in native if backend in line.lower()]
    if said:
        return f"the backend said: {said[-1]}"
    return "the driver reports no device"


_load_lock = threading.Lock()


@cache
def _load_backends_once() -> BackendReport:
    try:
        api = _api()
    except (OSError, AttributeError) as exc:
        logger.warning("cannot query ggml backends: %s", exc)
        return BackendReport(dynamic=False)
    if int(api.reg_count()) > 0:
        # Backends compiled in (the plain CPU build, or a GPU build without GGML_BACKEND_DL).
        names = [_text(api.reg_name(api.reg_get(i))).lower() for i in range(api.reg_count())]
        gpus = tuple(n for n in names if n in GPU_MODULES)
        return BackendReport(dynamic=False, gpu_backends=gpus, registered=_registered(api))
    lib_dir = Path(_lib.LIB_DIR)
    gpus = tuple(b for b in GPU_MODULES if (lib_dir / f"libggml-{b}.so").is_file())
    if "cuda" in gpus:
        logger.debug("preloaded CUDA runtime: %s", preload_cuda_runtime())
    _lib.take_native_problems()
    api.load_all_from_path(str(lib_dir).encode())
    native = _lib.take_native_problems()
    registered = _registered(api)
    problems = {
        b: diagnose_gpu_module(b, lib_dir / f"libggml-{b}.so", native)
        for b in gpus
        if not registered.get(b)
    }
    report = BackendReport(True, gpus, registered, problems)
    logger.info(
        "ggml backends loaded from %s: %s%s",
        lib_dir,
        ", ".join(f"{b} ({n} devices)" for b, n in registered.items()) or "none",
        f"; {report.no_gpu_reason}" if report.no_gpu_reason else "",
    )
    return report


def _registered(api: _GgmlDeviceApi) -> dict[str, int]:
    out = {}
    for i in range(int(api.reg_count())):
        reg = api.reg_get(i)
        out[_text(api.reg_name(reg)).lower()] = int(api.reg_dev_count(reg))
    return out


def load_backends() -> BackendReport:
    """Make sure ggml's backends are registered (once per process) and report on them.

    Call after ``_lib.backend_init()``. Loads the modules of a GGML_BACKEND_DL build from
    llama-cpp-python's lib folder only (not ggml's default search of the working directory).
    """
    with _load_lock:
        return _load_backends_once()


DEVICE_TYPES = {0: "cpu", DEV_TYPE_GPU: "gpu", DEV_TYPE_IGPU: "igpu", 3: "accel", 4: "meta"}


@dataclass(frozen=True)
class Device:
    """Any ggml backend device (CPU, GPU, accelerator) with its memory right now."""

    kind: str  # "cpu", "gpu", "igpu", "accel", "meta"
    name: str
    description: str
    backend: str
    free_bytes: int
    total_bytes: int


def list_devices() -> list[Device]:
    """Every device ggml has registered, in registry order (loading the modules first)."""
    load_backends()
    try:
        api = _api()
    except (OSError, AttributeError) as exc:
        logger.warning("cannot query ggml devices: %s", exc)
        return []
    devices = []
    for i in range(int(api.count())):
        dev = api.get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        api.memory(dev, ctypes.byref(free), ctypes.byref(total))
        reg = api.reg(dev)
        devices.append(
            Device(
                kind=DEVICE_TYPES.get(int(api.type(dev)), "unknown"),
                name=_text(api.name(dev)),
                description=_text(api.description(dev)),
                backend=_text(api.reg_name(reg)).lower() if reg else "",
                free_bytes=int(free.value),
                total_bytes=int(total.value),
            )
        )
    return devices


def list_gpu_devices() -> list[GpuDevice]:
    """The GPUs to offload to, numbered as llama.cpp's ``main_gpu`` counts them.

    Discrete GPUs; integrated ones only when there is no discrete GPU (as llama.cpp does).
    """
    all_devices = list_devices()
    gpus = [d for d in all_devices if d.kind == "gpu"] or [
        d for d in all_devices if d.kind == "igpu"
    ]
    found = [
        GpuDevice(
            index=i,
            name=d.name,
            description=d.description,
            backend=d.backend or "gpu",
            free_bytes=d.free_bytes,
            total_bytes=d.total_bytes,
        )
        for i, d in enumerate(gpus)
    ]
    logger.debug("ggml GPU devices: %s", found)
    return found
