"""The GGUF reader (llama.cpp's gguf package, wrapped): facts from good files, clear errors
for bad ones, and the loader's cheap header check."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from app.errors import ModelLoadError, ModelNotFound
from app.models.gguf import ArraySummary, check_gguf_file, read_gguf
from tests.support.gguf_writer import TINY_TENSORS, gguf_bytes, tiny_llama_metadata


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(gguf_bytes(tiny_llama_metadata(), TINY_TENSORS))
    return path


def test_reads_header_metadata_and_tensors(tiny: Path) -> None:
    info = read_gguf(tiny)
    assert info.version == 3
    assert info.architecture == "llama"
    assert info.name == "Tiny Test Model"
    assert info.quantization == "Q4_1"
    assert info.context_length == 4096
    assert info.chat_template == "{{ messages }}"
    assert [t.name for t in info.tensors] == ["token_embd.weight", "output_norm.weight"]
    assert info.n_params == 64 * 32 + 64
    assert info.size_bytes == tiny.stat().st_size
    assert info.metadata["general.languages"] == ["en", "fr"]
    assert info.metadata["tokenizer.ggml.tokens"] == ArraySummary(item_type=8, length=200)


def test_version_2_is_read(tmp_path: Path) -> None:
    path = tmp_path / "v2.gguf"
    path.write_bytes(gguf_bytes(tiny_llama_metadata(), TINY_TENSORS, version=2))
    assert read_gguf(path).version == 2


def test_unknown_file_type_and_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "bare.gguf"
    path.write_bytes(gguf_bytes({"general.file_type": 99}))
    info = read_gguf(path)
    assert info.quantization == "type 99"
    assert info.architecture == "unknown"
    assert info.name == "bare"
    assert info.context_length is None
    assert info.n_params == 0


def test_text_file_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("this is not a model, just some text that is long enough\n" * 3)
    with pytest.raises(ModelLoadError, match="not a GGUF model file"):
        read_gguf(path)


def test_tiny_and_empty_files(tmp_path: Path) -> None:
    for size, message in ((0, "not a GGUF model file"), (3, "not a GGUF"), (23, "truncated")):
        path = tmp_path / f"short{size}.gguf"
        path.write_bytes(b"GGUF"[:size] + b"\0" * max(0, size - 4))
        with pytest.raises(ModelLoadError, match=message):
            read_gguf(path)


@pytest.mark.parametrize("seed", range(5))
def test_garbage_after_a_valid_header_is_corrupt(tiny: Path, seed: int) -> None:
    """Random bytes where the metadata should be: the reader's odd exceptions are wrapped."""
    data = bytearray(tiny.read_bytes())
    data[24:] = random.Random(seed).randbytes(len(data) - 24)
    tiny.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"truncated|corrupt"):
        read_gguf(tiny)


def test_a_changed_file_is_read_again(tiny: Path) -> None:
    """Results are cached per (path, size, mtime): a replaced file is not served stale."""
    assert read_gguf(tiny).name == "Tiny Test Model"
    tiny.write_bytes(gguf_bytes({"general.name": "Another"}, TINY_TENSORS))
    assert read_gguf(tiny).name == "Another"


def test_unsupported_version(tmp_path: Path) -> None:
    path = tmp_path / "v9.gguf"
    path.write_bytes(gguf_bytes(tiny_llama_metadata(), TINY_TENSORS, version=9))
    with pytest.raises(ModelLoadError, match="GGUF version 9"):
        read_gguf(path)


@pytest.mark.parametrize("keep", [30, 200, 1500, 0.5, 0.9, -1])
def test_truncated_anywhere_is_caught(tiny: Path, keep: float) -> None:
    """Cut in the metadata, in the tensor table, or in the tensor data: always a clear error."""
    data = tiny.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    tiny.write_bytes(data[:cut])
    with pytest.raises(ModelLoadError, match="truncated"):
        read_gguf(tiny)


def test_impossible_counts_are_corrupt(tiny: Path) -> None:
    data = bytearray(tiny.read_bytes())
    data[8:16] = (2**62).to_bytes(8, "little")  # tensor count
    tiny.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="corrupt"):
        read_gguf(tiny)


def test_bad_value_type_is_corrupt(tmp_path: Path) -> None:
    data = bytearray(gguf_bytes({"a": 1}))
    key_end = 24 + 8 + 1  # header, key length, key "a"
    data[key_end : key_end + 4] = (77).to_bytes(4, "little")
    path = tmp_path / "badtype.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="corrupt"):
        read_gguf(path)


def test_folder_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is a folder"):
        read_gguf(tmp_path)
    with pytest.raises(ModelNotFound, match="not found"):
        read_gguf(tmp_path / "absent.gguf")


# --- the loader's cheap header check ---------------------------------------------------------
def gguf_header(version: int = 3, n_tensors: int = 5, n_kv: int = 2) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def test_header_check_accepts_a_header(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_header() + b"\0" * 100)
    assert check_gguf_file(path) == 124


def test_header_check_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="Model file not found"):
        check_gguf_file(tmp_path / "nope.gguf")
    with pytest.raises(ModelLoadError, match="is a folder"):
        check_gguf_file(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<html>not found</html>", "is not a GGUF model file"),
        (b"", "is not a GGUF model file"),
        (b"GGUF\x03\x00", "truncated"),
        (gguf_header(version=99), "GGUF version 99"),
        (gguf_header(n_tensors=0), "holds no tensors"),
        (gguf_header(n_tensors=2**60), "corrupt"),
    ],
)
def test_header_check_rejects_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        check_gguf_file(path)
