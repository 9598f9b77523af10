"""GPU devices through ggml's backend device API (ctypes on the bundled libggml).

llama-cpp-python does not bind ``ggml_backend_dev_*``; these functions live in
``libggml.so`` (registry: count/get) and ``libggml-base.so`` (name, description, type,
memory, backend reg). Only GPU-type devices are returned; integrated GPUs only when there
is no discrete one (as llama.cpp itself does).
"""

from __future__ import annotations

import ctypes
import logging
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


def list_gpu_devices() -> list[GpuDevice]:
    """The GPU devices ggml knows, with their free and total memory right now."""
    try:
        api = _api()
    except (OSError, AttributeError) as exc:
        logger.warning("cannot query ggml devices: %s", exc)
        return []
    by_type: dict[int, list[GpuDevice]] = {DEV_TYPE_GPU: [], DEV_TYPE_IGPU: []}
    for i in range(int(api.count())):
        dev = api.get(i)
        kind = int(api.type(dev))
        if kind not in by_type:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        api.memory(dev, ctypes.byref(free), ctypes.byref(total))
        reg = api.reg(dev)
        backend = _text(api.reg_name(reg)).lower() if reg else "gpu"
        found = by_type[kind]
        found.append(
            GpuDevice(
                index=len(found),
                name=_text(api.name(dev)),
                description=_text(api.description(dev)),
                backend=backend,
                free_bytes=int(free.value),
                total_bytes=int(total.value),
            )
        )
    devices = by_type[DEV_TYPE_GPU] or by_type[DEV_TYPE_IGPU]
    logger.debug("ggml GPU devices: %s", devices)
    return devices
