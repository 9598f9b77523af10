"""The model tools on the real default GGUF: header facts, `cria models list`, truncation."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.errors import ModelLoadError
from app.models.builtin import BUILTIN_MODELS
from app.models.gguf import read_gguf
from app.models.registry import resolve_model

REPO = Path(__file__).resolve().parents[2]
SPEC = BUILTIN_MODELS["smollm2"]


def test_default_model_is_the_verified_file(model_path: Path) -> None:
    assert model_path.name == SPEC.filename
    assert model_path.stat().st_size == SPEC.size
    digest = hashlib.sha256()
    with model_path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == SPEC.sha256


def test_header_facts(model_path: Path) -> None:
    info = read_gguf(model_path)
    assert (info.architecture, info.quantization, info.version) == ("llama", "Q4_1", 3)
    assert info.context_length == 8192
    assert info.chat_template is not None
    assert "<|im_start|>" in info.chat_template  # ChatML
    assert 130_000_000 < info.n_params < 140_000_000  # "135M"
    assert info.metadata["llama.block_count"] == 30
    last = max(info.tensors, key=lambda t: t.offset)  # offsets are absolute in the file
    assert info.data_offset <= min(t.offset for t in info.tensors)
    assert last.offset + last.n_bytes == SPEC.size


def test_cli_models_list_on_the_real_file(model_path: Path) -> None:
    env = {**os.environ, "CRIA_MODELS_DIR": str(model_path.parent)}
    out = subprocess.run(
        [sys.executable, "-m", "app", "models", "list", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = {row["name"]: row for row in json.loads(out)}
    row = rows[model_path.stem]
    assert (row["quantization"], row["architecture"], row["size_bytes"]) == (
        "Q4_1", "llama", SPEC.size
    )  # fmt: skip
    assert row["path"] == str(model_path)


@pytest.mark.parametrize("fraction", [0.001, 0.5, 0.999])
def test_a_cut_short_download_is_refused(model_path: Path, tmp_path: Path, fraction: float) -> None:
    """An interrupted download (the first part of the real file) gives a clear error."""
    cut = tmp_path / SPEC.filename
    with model_path.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(int(SPEC.size * fraction)))
    with pytest.raises(ModelLoadError, match="truncated"):
        resolve_model("smollm2", tmp_path, download=False)
