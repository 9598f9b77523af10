"""The cria command line: generated flags and --help, precedence, models commands, errors."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli import build_parser, main, settings_from_args
from app.settings import Settings, field_docs
from tests.support.gguf_writer import write_tiny_gguf

REPO = Path(__file__).resolve().parents[2]


def _squash(text: str) -> str:
    """argparse wraps help text (even at hyphens): compare without whitespace."""
    return re.sub(r"\s+", "", text)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*Settings.model_fields, "config"]:
        monkeypatch.delenv(f"CRIA_{name.upper()}", raising=False)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """`cria serve` configures process-wide logging; undo it for the tests that follow."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_serve_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    text = _squash(_help(capsys, "serve"))
    assert "--config" in text
    for doc in field_docs():
        assert doc.description, doc.name
        assert _squash(f"{doc.flag}") in text
        assert _squash(doc.description) in text, doc.name
        assert _squash(f"[default: {doc.default}; env: {doc.env}]") in text, doc.name


def test_issue_flags_exist(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "serve")
    for flag in ("--model", "--model-alias", "--host", "--port", "--parallel", "--ctx-size",
                 "--n-gpu-layers", "--threads", "--batch-size", "--max-queue",
                 "--max-tokens-limit", "--api-key", "--cors-origin", "--system-prompt",
                 "--log-format", "--log-level"):  # fmt: skip
        assert re.search(rf"^\s+{flag}\b", text, re.MULTILINE), flag
    assert "default: 127.0.0.1" in text
    assert "default: 8000" in text


def test_repeatable_and_boolean_flags() -> None:
    args = build_parser().parse_args(
        ["serve", "--api-key", "k1", "--api-key", "k2", "--cors-origin", "http://a.test",
         "--no-prompt-cache", "--n-gpu-layers", "all", "--threads", "2", "--keepalive-s", "1.5"]
    )  # fmt: skip
    settings = settings_from_args(args)
    assert settings.api_key == ["k1", "k2"]
    assert settings.cors_origin == ["http://a.test"]
    assert settings.prompt_cache is False
    assert settings.gpu_layers() == "all"
    assert (settings.threads, settings.keepalive_s) == (2, 1.5)


def test_only_given_flags_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "cria.toml"
    config.write_text("port = 7001\nparallel = 2\nctx_size = 512\n")
    monkeypatch.setenv("CRIA_PARALLEL", "6")
    args = build_parser().parse_args(["serve", "--config", str(config), "--ctx-size", "256"])
    settings = settings_from_args(args)
    assert (settings.port, settings.parallel, settings.ctx_size) == (7001, 6, 256)


def test_config_from_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cria.toml"
    config.write_text('host = "0.0.0.0"\napi_key = ["secret-one"]\n')
    monkeypatch.setenv("CRIA_CONFIG", str(config))
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert 'host = "0.0.0.0"' in out
    assert 'api_key = ["***"]' in out
    assert "secret-one" not in out


def test_invalid_values_exit_2_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "99999"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", "--n-gpu-layers", "many"]) == 2
    assert "--n-gpu-layers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["serve", "--log-format", "xml"])
    assert done.value.code == 2


def test_bad_config_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cria.toml"
    config.write_text("colour = 'blue'\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "unknown setting(s) colour" in capsys.readouterr().err


def test_serve_missing_model_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", "nope", "--models-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "model 'nope' not found" in err
    assert str(tmp_path / "nope.gguf") in err


def test_serve_non_gguf_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "fake.gguf").write_text("not a model, only words, many many words here")
    assert main(["serve", "--model", str(tmp_path / "fake.gguf")]) == 1
    assert "is not a GGUF model file" in capsys.readouterr().err


def test_models_list_pull_rm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    write_tiny_gguf(models / "tiny.Q4_1.gguf")
    assert main(["models", "--models-dir", str(models), "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "QUANTIZATION", "ARCHITECTURE", "PATH"]
    assert table[1].split()[:1] + table[1].split()[3:] == [
        "tiny.Q4_1", "Q4_1", "llama", str(models / "tiny.Q4_1.gguf")
    ]  # fmt: skip
    monkeypatch.setenv("CRIA_MODELS_DIR", str(models))
    assert main(["models", "pull", "tiny.Q4_1"]) == 0
    assert capsys.readouterr().out.strip() == str((models / "tiny.Q4_1.gguf").resolve())
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["quantization"], r["parameters"]) for r in rows] == [
        ("tiny.Q4_1", "Q4_1", 2112)
    ]
    assert main(["models", "rm", "tiny.Q4_1"]) == 0
    assert not (models / "tiny.Q4_1.gguf").exists()
    assert main(["models", "rm", "tiny.Q4_1"]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["models", "list"]) == 0
    assert "No models in" in capsys.readouterr().out


def test_python_m_app_is_cria() -> None:
    """`python -m app ...` and the installed `cria` script are the same program."""
    cria = Path(sys.executable).parent / "cria"
    by_module = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--help"], capture_output=True, text=True, cwd=REPO
    )
    by_script = subprocess.run([str(cria), "serve", "--help"], capture_output=True, text=True)
    assert by_module.returncode == by_script.returncode == 0
    assert by_module.stdout == by_script.stdout
    assert "--n-gpu-layers" in by_module.stdout
