"""Settings come from flags > CRIA_* environment > config file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import ConfigFileError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"CRIA_{name.upper()}", raising=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cria.toml"
    path.write_text(
        'port = 7001\nparallel = 3\nctx-size = 1024\nsystem_prompt = "from file"\n'
        'api_key = ["file-key"]\nprompt_cache = false\n'
    )
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert (settings.host, settings.port, settings.model) == ("127.0.0.1", 8000, "smollm2")
    assert settings.n_gpu_layers == "auto"
    assert settings.api_key == []


def test_file_over_defaults(config: Path) -> None:
    settings = load_settings({}, config)
    assert (settings.port, settings.parallel, settings.ctx_size) == (7001, 3, 1024)
    assert settings.system_prompt == "from file"
    assert settings.api_key == ["file-key"]
    assert settings.prompt_cache is False
    assert settings.host == "127.0.0.1"  # not in the file: default


def test_env_over_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRIA_PORT", "7002")
    monkeypatch.setenv("CRIA_API_KEY", "env-a, env-b")
    settings = load_settings({}, config)
    assert settings.port == 7002
    assert settings.api_key == ["env-a", "env-b"]
    assert settings.parallel == 3  # only in the file


def test_flag_over_env_over_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRIA_PORT", "7002")
    monkeypatch.setenv("CRIA_PARALLEL", "5")
    settings = load_settings({"port": 7003, "api_key": ["flag-key"]}, config)
    assert settings.port == 7003  # flag beats env and file
    assert settings.parallel == 5  # env beats file
    assert settings.ctx_size == 1024  # file beats default
    assert settings.api_key == ["flag-key"]


def test_plain_settings_ignore_any_file_after_load(config: Path) -> None:
    load_settings({}, config)
    assert Settings().port == 8000


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("prot = 1\n")
    with pytest.raises(ConfigFileError, match=r"unknown setting.*prot"):
        load_settings({}, path)


def test_missing_and_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="does not exist"):
        load_settings({}, tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 3\n")
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        load_settings({}, bad)


def test_bad_values_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cria.toml"
    path.write_text('n_gpu_layers = "lots"\n')
    with pytest.raises(ValidationError, match="n_gpu_layers"):
        load_settings({}, path)
    monkeypatch.setenv("CRIA_PORT", "99999")
    with pytest.raises(ValidationError, match="port"):
        load_settings()


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", "auto"), ("ALL", "all"), ("-1", "all"), ("12", 12)]
)
def test_gpu_layers(value: str, expected: object) -> None:
    assert load_settings({"n_gpu_layers": value}).gpu_layers() == expected
