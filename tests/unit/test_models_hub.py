"""hf://owner/repo/file.gguf through huggingface_hub against a local fake hub endpoint."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import ModelNotFound
from app.models.hub import HubRef, parse_hub_ref
from app.models.registry import resolve_model
from tests.support.file_server import FileServer, Route, serve_files
from tests.support.gguf_writer import TINY_TENSORS, gguf_bytes, tiny_llama_metadata

GGUF = gguf_bytes(tiny_llama_metadata(), TINY_TENSORS)
RESOLVE = "/owner/repo/resolve/main/tiny.Q4_1.gguf"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    """A minimal hub: the resolve URL answers HEAD (commit, etag, size) and GET (bytes)."""
    headers = {
        "X-Repo-Commit": "c0ffee" * 6 + "abcd",
        "ETag": f'"{hashlib.sha256(GGUF).hexdigest()}"',
    }
    with serve_files({RESOLVE: Route(GGUF, headers=headers)}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def _resolve_calls(hub: FileServer) -> list[tuple[str, str]]:
    return [r for r in hub.requests if "/resolve/" in r[1]]


def test_downloads_into_models_folder(hub: FileServer, tmp_path: Path) -> None:
    path = resolve_model("hf://owner/repo/tiny.Q4_1.gguf", tmp_path)
    assert path == (tmp_path / "tiny.Q4_1.gguf").resolve()
    assert path.read_bytes() == GGUF
    assert ("GET", RESOLVE) in _resolve_calls(hub)


def test_second_resolve_uses_the_local_file(hub: FileServer, tmp_path: Path) -> None:
    resolve_model("hf://owner/repo/tiny.Q4_1.gguf", tmp_path)
    before = list(hub.requests)
    resolve_model("hf://owner/repo/tiny.Q4_1.gguf", tmp_path)
    assert hub.requests == before


def test_offline_mode_missing_file(
    hub: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="downloads are off") as err:
        resolve_model("hf://owner/repo/tiny.Q4_1.gguf", tmp_path)
    assert str(tmp_path / "tiny.Q4_1.gguf") in err.value.message
    assert _resolve_calls(hub) == []


def test_offline_mode_with_file_present(
    hub: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve_model("hf://owner/repo/tiny.Q4_1.gguf", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    count = len(hub.requests)
    assert resolve_model("hf://owner/repo/tiny.Q4_1.gguf", tmp_path).read_bytes() == GGUF
    assert len(hub.requests) == count


def test_download_false_never_asks_the_hub(hub: FileServer, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="downloads are off"):
        resolve_model("hf://owner/repo/tiny.Q4_1.gguf", tmp_path, download=False)
    assert _resolve_calls(hub) == []


def test_missing_file_on_the_hub(hub: FileServer, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as err:
        resolve_model("hf://owner/repo/absent.gguf", tmp_path)
    assert "hf://owner/repo/absent.gguf" in err.value.message
    assert not (tmp_path / "absent.gguf").exists()


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("hf://o/r/m.gguf", HubRef("o/r", "m.gguf")),
        ("hf://o/r/sub/dir/m.gguf", HubRef("o/r", "sub/dir/m.gguf")),
        ("hf://o/r/m.gguf@v1.0", HubRef("o/r", "m.gguf", "v1.0")),
    ],
)
def test_parse(ref: str, expected: HubRef) -> None:
    assert parse_hub_ref(ref) == expected
    assert str(expected) == ref


@pytest.mark.parametrize("ref", ["hf://o/m.gguf", "hf://o/r/m.bin", "hf://o/r/../m.gguf"])
def test_parse_rejects(ref: str) -> None:
    with pytest.raises(ModelNotFound, match="not a valid hub reference"):
        parse_hub_ref(ref)
