"""GPU devices through ggml's backend device API (ctypes on the bundled libggml).

llama-cpp-python does not bind ``ggml_backend_dev_*``; these functions live in
``libggml.so`` (registry: count/get) and ``libggml-base.so`` (name, description, type,
memory, backend reg).
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

from app.engine.llama import _lib
from app.engine.llama.offload import GpuDevice

logger = logging.getLogger(__name__)

DEV_TYPE_GPU = 1  # GGML_BACKEND_DEVICE_TYPE_GPU
DEV_TYPE_IGPU = 2  # GGML_BACKEND_DEVICE_TYPE_IGPU


class _GgmlDeviceApi:
    """The few ggml device functions we need, typed."""

    def __init__(self) -> None:
        registry = ctypes.CDLL(str(_lib.LIB_DIR / "libggml.so"))
        base = ctypes.CDLL(str(_lib.LIB_DIR / "libggml-base.so"))
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
    """Every device ggml has registered, in registry order."""
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
