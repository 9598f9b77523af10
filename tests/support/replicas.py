"""Several real ``cria serve`` replicas behind a real HAProxy, on 127.0.0.1, for tests and bench.

HAProxy runs deploy/haproxy/haproxy.cfg exactly as documented, with only its ports changed
(``render_config``): the replicas' ports, the front end's and the stats page's. The chat
client (``chat_turn``) streams one turn and reports what a test asserts on: the replica
that answered (HAProxy's ``X-Cria-Replica``), the key echoed in ``X-Session-Id``, how the
stream ended, the prompt tokens served from cache and the time to the first token.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import REPO_ROOT, ServerProcess, free_port, running_server
from tests.support.sse_client import EventSourceParser

HAPROXY_CFG = REPO_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
ADDRESS = re.compile(r"127\.0\.0\.1:(\d+)")
REPLICA_LINE = re.compile(r"^\s*server (\S+) 127\.0\.0\.1:(\d+)", re.M)
FRONTEND_PORT, STATS_PORT = 8080, 8404  # the documented config's front end and stats page


def haproxy_binary() -> str:
    """HAProxy's path; the test fails (never skips) without it: ``make test`` installs it."""
    path = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    assert path, "haproxy is missing: `make test` installs Debian's haproxy package"
    return path


def documented_config() -> str:
    return HAPROXY_CFG.read_text()


def replica_names(config: str) -> list[str]:
    """The ``server`` names of the documented backend, in order (cria-1, cria-2, ...)."""
    return [name for name, _ in REPLICA_LINE.findall(config)]


def check_timing(config: str) -> tuple[float, int, float]:
    """(inter seconds, fall count, check timeout seconds) as the config sets them."""
    inter = re.search(r"default-server .*\binter (\d+)s", config)
    fall = re.search(r"default-server .*\bfall (\d+)", config)
    timeout = re.search(r"timeout check (\d+)s", config)
    assert inter, "no inter"
    assert fall, "no fall"
    assert timeout, "no timeout check"
    return float(inter[1]), int(fall[1]), float(timeout[1])


def render_config(config: str, ports: Mapping[int, int], balance: str | None = None) -> str:
    """The config with each ``127.0.0.1:PORT`` moved to ``ports[PORT]`` (every one must be
    mapped); ``balance`` replaces the balance line (the bench's round-robin baseline)."""
    text = ADDRESS.sub(lambda m: f"127.0.0.1:{ports[int(m[1])]}", config)
    if balance is not None:
        text, count = re.subn(r"^(\s*)balance .*$", rf"\1balance {balance}", text, flags=re.M)
        assert count == 1
    return text


@dataclass
class Proxy:
    """A running HAProxy: its front end, stats page, process and log file."""

    base_url: str
    stats_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, str]:
        """Each replica's state on the stats page (UP, DOWN, "UP 1/2"...)."""
        text = httpx.get(f"{self.stats_url}/stats;csv", timeout=5.0).text.lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "cria_replicas" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for(self, name: str, state: str, timeout_s: float) -> float:
        """Seconds until replica ``name`` shows ``state`` (fails after ``timeout_s``)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.status().get(name) == state:
                return time.monotonic() - started
            time.sleep(0.1)
        raise AssertionError(f"{name} not {state} in {timeout_s} s: {self.status()}\n{self.log()}")


@contextmanager
def running_haproxy(config: str, timeout_s: float = 30.0) -> Iterator[Proxy]:
    """Run HAProxy in the foreground on ``config``; yields once every replica is UP."""
    front = re.search(r"^frontend cria\n\s*bind (\S+)", config, re.M)
    stats = re.search(r"^frontend stats\n\s*bind (\S+)", config, re.M)
    assert front, "no cria front end"
    assert stats, "no stats front end"
    folder = Path(tempfile.mkdtemp(prefix="cria-haproxy-"))
    (folder / "haproxy.cfg").write_text(config)
    log_path = folder / "haproxy.log"
    command = [haproxy_binary(), "-db", "-f", str(folder / "haproxy.cfg")]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    proxy = Proxy(f"http://{front[1]}", f"http://{stats[1]}", process, log_path)
    try:
        for name in replica_names(config):
            _wait_up(proxy, name, timeout_s)
        yield proxy
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_up(proxy: Proxy, name: str, timeout_s: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proxy.process.poll() is not None:
            raise AssertionError(f"haproxy exited:\n{proxy.log()}")
        try:
            if proxy.status().get(name) == "UP":
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{name} never came UP:\n{proxy.log()}")


@contextmanager
def running_replicas(env: Mapping[str, str], count: int) -> Iterator[list[ServerProcess]]:
    """``count`` replicas of ``cria serve`` (the CLI: it drains on SIGTERM), all ready."""
    with ExitStack() as stack:
        servers = [
            stack.enter_context(running_server(env, cli=True, wait_ready=False))
            for _ in range(count)
        ]
        for server in servers:  # they load at the same time; wait for each
            _wait_ready(server, 180.0)
        yield servers


def _wait_ready(server: ServerProcess, timeout_s: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        assert server.process.poll() is None, server.log()
        if httpx.get(f"{server.base_url}/health", timeout=5.0).status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"not ready in {timeout_s} s:\n{server.log()}")


def port_of(server: ServerProcess) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def proxy_ports(config: str, servers: list[ServerProcess]) -> dict[int, int]:
    """The documented ports -> the replicas' real ports and two free ones for the proxy."""
    documented = [int(port) for _, port in REPLICA_LINE.findall(config)]
    assert len(documented) == len(servers)
    ports = {doc: port_of(server) for doc, server in zip(documented, servers, strict=True)}
    ports[FRONTEND_PORT] = free_port()
    ports[STATS_PORT] = free_port()
    return ports


@dataclass
class Turn:
    """One streamed chat turn as the client saw it."""

    status: int
    replica: str | None = None
    echoed_key: str | None = None
    text: str = ""
    ending: str = ""  # the finish_reason, or the error code of a final error event
    prompt_tokens: int = 0
    cached_tokens: int = 0
    ttft_s: float | None = None
    events: list[str] = field(default_factory=list)


async def chat_turn(
    client: httpx.AsyncClient,
    messages: list[dict[str, str]],
    *,
    max_tokens: int,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    on_first_token: Callable[[], None] | None = None,
) -> Turn:
    """Stream one chat turn (usage included) and report how it went."""
    body: dict[str, Any] = {
        "messages": messages,
        "stream": True,
        "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
        **(extra or {}),
    }
    started = time.perf_counter()
    parser = EventSourceParser()
    async with client.stream(
        "POST", "/v1/chat/completions", json=body, headers=dict(headers or {})
    ) as response:
        turn = Turn(
            response.status_code,
            response.headers.get("x-cria-replica"),
            response.headers.get("x-session-id"),
        )
        if response.status_code != 200:
            await response.aread()
            return turn
        async for chunk in response.aiter_text():
            for event in parser.feed(chunk):
                _take(turn, event.data, started, on_first_token)
    return turn


def _take(turn: Turn, data: str, started: float, on_first_token: Callable[[], None] | None) -> None:
    turn.events.append(data)
    if data == "[DONE]":
        return
    payload = json.loads(data)
    if "error" in payload:
        turn.ending = payload["error"].get("code") or "error"
        return
    for choice in payload.get("choices", []):
        piece = choice.get("delta", {}).get("content") or ""
        if piece and turn.ttft_s is None:
            turn.ttft_s = time.perf_counter() - started
            if on_first_token is not None:
                on_first_token()
        turn.text += piece
        if choice.get("finish_reason"):
            turn.ending = choice["finish_reason"]
    usage = payload.get("usage")
    if usage:
        turn.prompt_tokens = usage["prompt_tokens"]
        details = usage.get("prompt_tokens_details") or {}
        turn.cached_tokens = details.get("cached_tokens", 0)
