"""llama.cpp's and ggml's log output, routed into Python logging at DEBUG.

Warning and error lines are also kept (the last few) so load and decode failures can
quote llama.cpp's own explanation in their messages. The ctypes callback object must stay
referenced for as long as the library may call it, hence the module-level object.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import threading

from llama_cpp import llama_cpp as L  # noqa: TID251 - this package is the llama_cpp boundary

logger = logging.getLogger(__name__)
native_logger = logging.getLogger("app.engine.llama.native")

# enum ggml_log_level (ggml.h): NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5.
_GGML_LOG_WARN = 3
_GGML_LOG_ERROR = 4
_GGML_LOG_CONT = 5
_recent_problems: collections.deque[str] = collections.deque(maxlen=8)
_problems_lock = threading.Lock()
_last_level = 0


def _on_native_log(level: int, text: bytes | None, _user_data: object) -> None:
    global _last_level
    if level != _GGML_LOG_CONT:
        _last_level = level
    message = (text or b"").decode("utf-8", errors="replace").rstrip()
    if not message:
        return
    native_logger.debug("%s", message)
    if _last_level in (_GGML_LOG_ERROR, _GGML_LOG_WARN):
        with _problems_lock:
            _recent_problems.append(message)


_log_callback = L.llama_log_callback(_on_native_log)


def install_native_log() -> None:
    """Send llama.cpp's and ggml's log to the ``app.engine.llama.native`` logger.

    Replaces llama-cpp-python's own callback, which prints to stderr.
    """
    L.llama_log_set(_log_callback, ctypes.c_void_p(0))


def take_native_problems() -> list[str]:
    """Return and forget the last warning/error lines llama.cpp logged (for error messages)."""
    with _problems_lock:
        lines = list(_recent_problems)
        _recent_problems.clear()
    return lines
