"""configure_logging: text and JSON lines, extra fields, uvicorn's records, no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from app.logging_setup import configure_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield io.StringIO()
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_the_request_fields(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream=stream)
    fields = {"request_id": "req-1", "route": "/v1/chat/completions", "status": 200,
              "prompt_tokens": 12, "completion_tokens": 30, "duration_ms": 812.5,
              "tokens_per_s": 41.2}  # fmt: skip
    logging.getLogger("app.api.test").info("request done", extra=fields)
    (line,) = _lines(stream)
    entry = json.loads(line)
    assert entry["level"] == "info"
    assert entry["logger"] == "app.api.test"
    assert entry["message"] == "request done"
    assert entry["timestamp"].endswith("+00:00")
    for key, value in fields.items():
        assert entry[key] == value


def test_levels_filter(stream: io.StringIO) -> None:
    configure_logging("warning", "json", stream=stream)
    logging.getLogger("app.x").info("quiet")
    logging.getLogger("app.x").warning("loud")
    assert [json.loads(line)["message"] for line in _lines(stream)] == ["loud"]


def test_text_lines_show_extras(stream: io.StringIO) -> None:
    configure_logging("debug", "text", stream=stream)
    logging.getLogger("app.y").debug("hello %s", "world", extra={"status": 201})
    (line,) = _lines(stream)
    assert " DEBUG " in line
    assert line.endswith("app.y: hello world status=201")


def test_secrets_are_masked(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream=stream)
    logging.getLogger("app.z").info(
        "auth", extra={"api_key": "sk-123", "authorization": "Bearer x"}
    )
    entry = json.loads(_lines(stream)[0])
    assert entry["api_key"] == "***"
    assert entry["authorization"] == "***"
    assert "sk-123" not in stream.getvalue()


def test_uvicorn_records_use_the_same_format(stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(io.StringIO()))
    configure_logging("info", "json", stream=stream)
    logging.getLogger("uvicorn.error").info(
        "Application startup complete.", extra={"color_message": "\x1b[1mApplication\x1b[0m"}
    )
    entry = json.loads(_lines(stream)[0])
    assert entry["logger"] == "uvicorn.error"
    assert "color_message" not in entry
    assert logging.getLogger("uvicorn.error").handlers == []


def test_exceptions_are_one_json_line(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream=stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("app.e").exception("failed")
    (line,) = _lines(stream)
    assert "RuntimeError: boom" in json.loads(line)["exception"]


def test_configure_twice_keeps_one_handler(stream: io.StringIO) -> None:
    configure_logging("info", "text", stream=io.StringIO())
    configure_logging("info", "json", stream=stream)
    logging.getLogger("app.once").info("once")
    assert len(_lines(stream)) == 1
