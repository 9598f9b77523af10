"""Log formatting for the whole process: plain text lines or JSON lines.

Anything passed as ``extra={...}`` to a log call (request_id, route, status, prompt_tokens,
completion_tokens, duration_ms, tokens_per_s, ...) becomes a field of the JSON object, or a
``key=value`` suffix of the text line. Secrets are never written: fields named like keys or
tokens of authentication are replaced by ``***``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}  # uvicorn's ANSI-coloured copy of the message
)
_SECRET_NAMES = ("api_key", "apikey", "authorization", "x_api_key", "password", "secret")
_HANDLER_NAME = "cria"
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def _is_secret(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    return any(secret in lowered for secret in _SECRET_NAMES)


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record, with secrets masked."""
    return {
        key: ("***" if _is_secret(key) else value)
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(record_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


# Control characters (and the Unicode line separators) as escapes: a request path or an
# option name with a newline in it cannot forge a line of the text log.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {
    0x2028: "\\u2028",
    0x2029: "\\u2029",
    0x85: "\\x85",
}


def escape_controls(text: str) -> str:
    """``text`` with control characters written as ``\\xNN`` escapes (one line)."""
    return text.translate(_CONTROL)


class TextFormatter(logging.Formatter):
    """``2026-01-01T12:00:00.000+00:00 INFO  app.x: message key=value ...``.

    The message and the extras are one line each, control characters escaped; only a
    traceback, which comes from the server itself, spans lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = escape_controls(record.getMessage())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {message}"
        extras = record_extras(record)
        if extras:
            line += " " + " ".join(f"{k}={escape_controls(str(v))}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(
    level: str = "info", fmt: Literal["text", "json"] = "text", stream: TextIO | None = None
) -> None:
    """Send every log record (ours and uvicorn's) to one stderr handler in ``fmt``.

    Idempotent: calling it again replaces the handler it installed before.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _SERVER_LOGGERS:  # uvicorn's loggers go through ours, in the same format
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
        server_logger.setLevel(level.upper())
