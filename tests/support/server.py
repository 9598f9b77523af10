"""Run the app in a real uvicorn process on a free 127.0.0.1 port, for HTTP tests.

``running_server(env)`` starts ``python -m uvicorn --factory ...`` with the given
``CRIA_*`` variables, waits for ``/health`` and yields a ``ServerProcess`` (base URL and
the captured log). ``fake_app_from_env`` is a factory serving the FakeEngine, configured
by ``CRIA_TEST_FAKE_ENGINE`` (JSON keyword arguments, plus ``reply`` as a fixed text).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_FACTORY = "app.api.main:create_app_from_env"
FAKE_FACTORY = "tests.support.server:fake_app_from_env"
FAKE_ENGINE_ENV = "CRIA_TEST_FAKE_ENGINE"


def fake_app_from_env() -> FastAPI:
    """The app over a FakeEngine; settings from ``CRIA_*``, the fake from its JSON variable."""
    from app.api.app import create_app
    from app.logging_setup import configure_logging
    from app.settings import Settings
    from tests.support.fake_engine import FakeEngine

    options = json.loads(os.environ.get(FAKE_ENGINE_ENV, "{}"))
    reply = options.pop("reply", None)
    if reply is not None:
        options["reply"] = lambda prompt: str(reply)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, FakeEngine(**options))


def real_model_env(model_path: Path, **overrides: str) -> dict[str, str]:
    """``CRIA_*`` variables serving the real model with small, test-friendly settings.

    One CPU thread: on a small shared machine, llama.cpp's worker threads spin at barriers
    and slow down many times over when another process takes a core; one thread does not.
    """
    env = {
        "CRIA_MODEL": str(model_path),
        "CRIA_PARALLEL": "8",
        "CRIA_CTX_SIZE": "1024",
        "CRIA_BATCH_SIZE": "256",
        "CRIA_SEED": "1234",
        "CRIA_THREADS": "1",
    }
    env.update({f"CRIA_{name.upper()}": value for name, value in overrides.items()})
    return env


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A running server: its URL, its process and the file its log goes to."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_until_up(server: ServerProcess, timeout_s: float, *, ready: bool) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            code = server.process.returncode
            raise RuntimeError(f"the server exited with {code}:\n{server.log()}")
        try:
            response = httpx.get(f"{server.base_url}/health", timeout=2.0)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        if response.status_code == 200 or not ready:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the server did not become ready in {timeout_s} s:\n{server.log()}")


@contextmanager
def running_server(
    env: Mapping[str, str],
    *,
    factory: str = REAL_FACTORY,
    ready_timeout_s: float = 120.0,
    wait_ready: bool = True,
    cli: bool = False,
) -> Iterator[ServerProcess]:
    """Run uvicorn with ``factory`` and ``env`` (added to a copy of os.environ).

    ``cli`` runs ``python -m app serve`` instead (the real model, settings from ``env``):
    the way users run it, with its graceful drain on SIGTERM/SIGINT.
    """
    port = free_port()
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
    full_env.setdefault("CRIA_LOG_LEVEL", "info")
    if cli:
        command = [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(port)]
    else:
        command = [sys.executable, "-m", "uvicorn", "--factory", factory]
        command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        command += ["--log-level", "warning", "--timeout-graceful-shutdown", "3"]
    with tempfile.NamedTemporaryFile(prefix="cria-server-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_until_up(server, ready_timeout_s, ready=wait_ready)
        yield server
    finally:
        _stop(process)
        log_path.unlink(missing_ok=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())  # started from any thread
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except FileNotFoundError:
        return b""  # exited meanwhile


def engine_processes(server: ServerProcess) -> set[int]:
    """The server's engine worker processes: children of its multiprocessing fork server
    (or, where there is none, children started by spawn), not the resource tracker."""
    found: set[int] = set()
    for child in _children(server.process.pid):
        cmdline = _cmdline(child)
        if b"resource_tracker" in cmdline:
            continue
        if b"forkserver" in cmdline:
            found.update(pid for pid in _children(child) if _cmdline(pid))
        elif b"spawn_main" in cmdline:
            found.add(child)
    return found
