"""Run the app in a real uvicorn process on a free 127.0.0.1 port, for the browser tests.

``serve(factory, env)`` starts ``python -m uvicorn --factory <factory>``, waits until
``/health`` answers (or just the port, for a server meant to stay loading), yields the base
URL, and stops the process afterwards. The process gets a clean environment: inherited
``CRIA_*`` variables are dropped so only what the test passes configures the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_FACTORY = "app.api.main:create_app_from_env"
FAKE_FACTORY = "tests.support.web_apps:fake_app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running uvicorn process and where to reach it."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.base_url}/health", timeout=5)

    def stop(self) -> None:
        """SIGINT first (uvicorn's graceful stop runs the lifespan), then SIGKILL."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CRIA_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


def _wait_ready(server: Server, timeout_s: float, wait_healthy: bool) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited ({server.process.returncode}):\n{server.log_tail()}")
        try:
            response = server.health()
        except httpx.HTTPError as err:
            last = repr(err)
        else:
            if response.status_code == 200 or not wait_healthy:
                return
            last = f"{response.status_code} {response.text[:200]}"
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout_s}s ({last}):\n{server.log_tail()}")


@contextmanager
def serve(
    factory: str, env: dict[str, str], *, timeout_s: float = 180, wait_healthy: bool = True
) -> Iterator[Server]:
    """Start uvicorn with ``factory`` and ``env``; yield the Server; stop it afterwards."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="cria-web-", suffix=".log", delete=False)  # noqa: SIM115
    command = [sys.executable, "-m", "uvicorn", "--factory", factory]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=_environment(env), stdout=log, stderr=subprocess.STDOUT
    )
    server = Server(f"http://127.0.0.1:{port}", process, Path(log.name))
    try:
        _wait_ready(server, timeout_s, wait_healthy)
        yield server
    finally:
        server.stop()
        log.close()
        Path(log.name).unlink(missing_ok=True)
