"""The front door (issue 17 row 5): a head cap (431), head and body timeouts, a connection
cap (503), on a real uvicorn server with httptools, driven through raw sockets.

The timeouts here are short (0.5-1 s) so that the tests are quick; each check waits up to
10 s for the server to act, far more than it needs even on a busy 2-core machine.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from app.api.app import create_app
from app.front_door import guarded_protocol
from tests.support.api import make_settings
from tests.support.fake_engine import FakeEngine
from tests.support.server import free_port

WAIT_S = 10.0


@contextmanager
def front_door(*, max_connections: int = 64) -> Iterator[int]:
    """A uvicorn server (httptools, the guarded protocol) on a free port, in a thread."""
    port = free_port()
    config = uvicorn.Config(
        create_app(make_settings(), FakeEngine()),
        host="127.0.0.1",
        port=port,
        log_config=None,
        http=guarded_protocol(max_header_bytes=8192, head_timeout_s=0.5, body_timeout_s=1.0),
        limit_concurrency=max_connections,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(WAIT_S)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (b"" if it just closes)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def closed_within(sock: socket.socket) -> float:
    started = time.monotonic()
    read_all(sock)
    return time.monotonic() - started


def test_a_normal_request_passes() -> None:
    with front_door() as port, connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("size", [20_000, 4_000_000])
def test_headers_over_the_cap_get_431_and_the_connection_closes(size: int) -> None:
    with front_door() as port, connect(port) as sock:
        head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
        # The server may answer and close while we are still sending.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head + b"a" * size + b"\r\n\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]


def test_a_socket_that_sends_nothing_is_closed_after_the_head_timeout() -> None:
    with front_door() as port, connect(port) as sock:
        assert closed_within(sock) < WAIT_S


def test_a_request_head_that_stalls_halfway_is_closed() -> None:
    with front_door() as port, connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert closed_within(sock) < WAIT_S


def test_a_body_that_stalls_is_closed() -> None:
    with front_door() as port, connect(port) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"prompt": '
        )
        assert closed_within(sock) < WAIT_S


def test_connections_over_the_cap_get_503() -> None:
    with front_door(max_connections=2) as port:
        idle = [connect(port), connect(port)]
        try:
            time.sleep(0.1)
            with connect(port) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert read_all(sock).startswith(b"HTTP/1.1 503")
        finally:
            for sock in idle:
                sock.close()
