"""The CUDA build (`make cuda`) serving for real: on the GPU when there is one, else on the CPU.

Marked ``cuda`` and skipped, with the reason, when the installed llama.cpp has no CUDA
backend (the plain CPU build). Against a CUDA build on a host without an NVIDIA driver or
device, `cria serve`'s app starts, /health and /model-card report ``backend: cpu`` with the
reason ("CUDA build, but no CUDA device (driver not found)"), and generation works. On a
host with a CUDA device the same test checks that every layer went to it instead.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess, real_model_env, running_server

pytestmark = pytest.mark.cuda


def _cuda_backend() -> Any:
    """The backend report of this llama.cpp build; skips the module on builds without CUDA."""
    from app.engine.llama import _lib
    from app.engine.llama.devices import load_backends

    _lib.backend_init()
    report = load_backends()
    if "cuda" not in report.gpu_backends:
        pytest.skip(
            f"the installed llama.cpp ({_lib.LIB_DIR}) has no CUDA backend: build one with "
            "`make cuda` to run the CUDA tests"
        )
    return report


def _driver_present() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def cuda_report() -> Any:
    return _cuda_backend()


@pytest.fixture(scope="module")
def server(cuda_report: Any, model_path: Path) -> Iterator[ServerProcess]:
    with running_server(real_model_env(model_path, parallel="2")) as process:
        yield process


def test_health_and_model_card_say_where_the_model_runs(
    cuda_report: Any, server: ServerProcess
) -> None:
    health = httpx.get(f"{server.base_url}/health", timeout=10).json()
    card = httpx.get(f"{server.base_url}/model-card", timeout=10).json()
    offload = health["offload"]
    assert card["offload"] == offload
    assert offload["requested"] == "auto"
    assert offload["total_layers"] == 31  # SmolLM2-135M: 30 blocks + the output layer
    if cuda_report.registered.get("cuda", 0) == 0:
        assert offload["backend"] == "cpu"
        assert offload["gpu_layers"] == 0
        assert offload["reason"].startswith("CUDA build, but no CUDA device (")
        assert offload["reason"].endswith(": running on the CPU")
        assert offload["fallback"] is False  # "auto" choosing the CPU is no fallback
        if not _driver_present():
            assert "(driver not found)" in offload["reason"]
    else:
        assert offload["backend"] == "cuda"
        assert offload["gpu_layers"] == offload["total_layers"]
        assert "auto: all layers fit" in offload["reason"]


def test_generates_text(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/completions",
        json={"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usage"]["completion_tokens"] > 0
    assert body["choices"][0]["text"].strip()


def test_backend_modules_load_from_the_package_only(cuda_report: Any) -> None:
    """A GGML_BACKEND_DL build: CPU registered from llama_cpp/lib, CUDA present as a module."""
    from app.engine.llama import _lib
    from app.engine.llama.devices import list_devices

    assert cuda_report.dynamic
    assert cuda_report.registered.get("cpu") == 1
    assert (Path(_lib.LIB_DIR) / "libggml-cuda.so").is_file()
    kinds = [d.kind for d in list_devices()]
    assert kinds.count("cpu") == 1
    assert kinds.count("gpu") == cuda_report.registered.get("cuda", 0)
