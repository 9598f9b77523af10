"""Free GPU memory at start, for the model router's VRAM budget.

The query runs in a short-lived spawned process: asking a CUDA device for its memory creates
a CUDA context, which would otherwise stay in the API process (hundreds of MiB of VRAM the
engine workers could use). A build without any GPU backend module answers None at once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
from pathlib import Path

from app.engine.llama import _lib
from app.engine.llama.offload import GPU_MODULES

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 60.0


def gpu_build() -> bool:
    """Whether llama-cpp-python's lib folder holds a GPU backend (or was built with one)."""
    lib_dir = Path(_lib.LIB_DIR)
    if any((lib_dir / f"libggml-{name}.so").is_file() for name in GPU_MODULES):
        return True
    return _lib.supports_gpu_offload()


def free_vram_here() -> int | None:
    """Free bytes of the GPUs llama.cpp would offload to, summed (None: no GPU). Loads the
    backends in this process."""
    from app.engine.llama.devices import list_gpu_devices

    _lib.backend_init()
    gpus = list_gpu_devices()
    return sum(gpu.free_bytes for gpu in gpus) if gpus else None


def probe_free_vram() -> int | None:
    """``free_vram_here`` in a spawned process (None: no GPU build, no GPU, or it failed)."""
    if not gpu_build():
        return None
    context = multiprocessing.get_context("spawn")
    try:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            return pool.submit(free_vram_here).result(timeout=PROBE_TIMEOUT_S)
    except Exception as exc:  # a broken driver must not stop the server: no VRAM check
        logger.warning("could not read the free GPU memory (%s); VRAM is not budgeted", exc)
        return None
