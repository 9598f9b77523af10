"""The server's own ceiling: SSE tokens/s with an instant fake model, and CPU per token.

With a backend that costs nothing (``instant_backend``: no model, a token per sequence
per step, O(1) work per token), everything measured is the server itself: the engine's
scheduler and output stage, the IPC to the API process (``--engine-process on``), the
OpenAI chat route, JSON and SSE framing, uvicorn. For 8 and 32 concurrent streamed chats
(``--tokens`` each, ignore_eos, greedy), it prints aggregate tokens/s and the CPU
microseconds per token of the API process, of the engine worker process, and of the client
(a separate process: by default a byte-level SSE reader, ``--client httpx`` for a typical
client; counted so that its share is known, since on a 2-core machine it competes with the
server).

    python bench/server_ceiling.py                     # both engine modes, 8 and 32 clients
    python bench/server_ceiling.py --engine-process off --clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def instant_backend(config: object) -> object:
    """A fake backend whose decode and sampling cost O(1) per token (a fork-server target).

    tests/support/fake_backend.py's FakeBackend checks and records every batch and hashes the
    whole history to pick a token: right for tests, but O(context) per token, so it took a
    third of the engine process's time here. This one keeps the position check only.
    """
    from collections.abc import Sequence

    from app.engine.backend import BatchToken
    from app.engine.types import EngineConfig
    from tests.support.fake_backend import FakeBackend, FakeBackendError

    class InstantBackend(FakeBackend):
        def decode(self, batch: Sequence[BatchToken]) -> None:
            outputs: dict[int, tuple[int, ...]] = {}
            for i, bt in enumerate(batch):
                kv = self.kv[bt.seq_id]
                if bt.pos != len(kv):
                    raise FakeBackendError(f"seq {bt.seq_id}: pos {bt.pos}, kv has {len(kv)}")
                kv.append(bt.token)
                if bt.logits:
                    outputs[i] = (bt.token,)
            self.outputs = outputs

    def reply(history: Sequence[int], n_sampled: int, seed: int) -> int:
        return ord("a") + (history[-1] + n_sampled) % 26

    assert isinstance(config, EngineConfig)
    return InstantBackend(
        n_slots=config.n_slots, n_ctx_slot=config.n_ctx_slot, n_batch=512, reply=reply
    )


def serve(port: int, mode: str, slots: int) -> None:
    """Run the real app and uvicorn settings of ``cria serve`` over the instant fake engine."""
    import uvicorn

    from app.api.app import create_app
    from app.engine.remote import WorkerEngine
    from app.engine.service import LlamaEngine
    from app.engine.types import EngineConfig
    from app.front_door import guarded_protocol
    from app.settings import Settings
    from tests.support.fake_worker import fake_vocabulary

    settings = Settings(parallel=slots, ctx_size=2048, log_level="warning")
    config = EngineConfig(model_path="/models/fake.gguf", n_slots=slots, n_ctx_slot=2048)
    engine = (
        WorkerEngine(config, backend_factory=instant_backend, vocabulary=fake_vocabulary)
        if mode == "on"
        else LlamaEngine(config, backend_factory=instant_backend)  # type: ignore[arg-type]
    )
    app = create_app(settings, engine=engine)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http=guarded_protocol(max_header_bytes=65536, head_timeout_s=10, body_timeout_s=30),
    )


def chat_body(i: int, tokens: int) -> dict[str, object]:
    return {
        "model": "fake",
        "messages": [{"role": "user", "content": f"hello {i}"}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def raw_stream(host: str, port: int, body: bytes, conn: list[Any]) -> int:
    """One streamed chat over a kept-alive HTTP/1.1 connection, read as bytes: the chunked
    body is read until its last chunk and only the final usage chunk is parsed (a client that
    costs the server's machine a few microseconds per token, unlike httpx's line parser)."""
    if not conn:
        conn.extend(await asyncio.open_connection(host, port))
    reader, writer = conn
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    status = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in status.split(b"\r\n", 1)[0] or b"chunked" not in status.lower():
        raise RuntimeError(status.decode(errors="replace"))
    tail = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            break
        if b'"usage":{' in chunk:
            tail = chunk
    usage = tail[tail.index(b"data: {") + 6 :].split(b"\n", 1)[0]
    return int(json.loads(usage)["usage"]["completion_tokens"])


def raw_client(url: str, clients: int, tokens: int, rounds: int) -> None:
    """``client`` over ``raw_stream``: one kept-alive connection per concurrent client."""
    host, port = url.removeprefix("http://").split(":")

    async def main() -> None:
        conns: list[list[Any]] = [[] for _ in range(clients)]
        bodies = [json.dumps(chat_body(i, tokens)).encode() for i in range(clients)]
        await raw_stream(host, int(port), bodies[0], conns[0])
        start, total = time.perf_counter(), 0
        for _ in range(rounds):
            runs = (raw_stream(host, int(port), bodies[i], conns[i]) for i in range(clients))
            total += sum(await asyncio.gather(*runs))
        print(json.dumps({"tokens": total, "seconds": time.perf_counter() - start}))

    asyncio.run(main())


def client(url: str, clients: int, tokens: int, rounds: int) -> None:
    """Run ``rounds`` rounds of ``clients`` concurrent streamed chats; print tokens and time."""

    async def one(http: httpx.AsyncClient, i: int) -> int:
        body = chat_body(i, tokens)
        n = 0
        async with http.stream("POST", url + "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("data: {") and '"usage":{' in line:
                    usage = json.loads(line[6:]).get("usage") or {}
                    n = int(usage.get("completion_tokens") or n)
        return n

    async def main() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=600, limits=limits) as http:
            await one(http, -1)
            start, total = time.perf_counter(), 0
            for _ in range(rounds):
                total += sum(await asyncio.gather(*(one(http, i) for i in range(clients))))
            print(json.dumps({"tokens": total, "seconds": time.perf_counter() - start}))

    asyncio.run(main())


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``: the engine worker is a child of multiprocessing's fork
    server (itself a child of the server), or a direct child where it was spawned."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    direct = [int(p) for p in out.stdout.split()]
    return direct + [d for p in direct for d in children(p)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(mode: str, clients: int, args: argparse.Namespace) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, __file__, "--serve", str(port), mode, str(max(clients, 8))]
    server = subprocess.Popen(cmd, cwd=REPO_ROOT)
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        workers = children(server.pid)
        api0, eng0 = cpu_s(server.pid), sum(cpu_s(p) for p in workers)
        run = [sys.executable, __file__, f"--{args.client}-client", url, str(clients)]
        run.append(str(args.tokens))
        run.append(str(args.rounds))
        before = os.times()
        started = time.perf_counter()
        done = subprocess.run(run, capture_output=True, text=True, check=True, cwd=REPO_ROOT)
        wall = time.perf_counter() - started
        api, eng = cpu_s(server.pid) - api0, sum(cpu_s(p) for p in workers) - eng0
        result = json.loads(done.stdout.strip().splitlines()[-1])
        # The client's own CPU: the child's rusage (what ``subprocess.run`` waited for).
        tokens = result["tokens"]
        rate = tokens / result["seconds"]
        after = os.times()
        client_cpu = after.children_user + after.children_system
        client_cpu -= before.children_user + before.children_system
        print(
            f"engine-process {mode:3} {clients:3} clients: {rate:8.0f} tokens/s   CPU us/token: "
            f"API {api / tokens * 1e6:6.1f}  engine {eng / tokens * 1e6:6.1f}  "
            f"client {client_cpu / tokens * 1e6:6.1f}   (wall {wall:.1f} s)",
            flush=True,
        )
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] in ("--httpx-client", "--raw-client"):
        run = client if sys.argv[1] == "--httpx-client" else raw_client
        run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine-process", default="on,off")
    parser.add_argument("--clients", default="8,32")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="raw: a byte-level SSE reader (the server's ceiling); httpx: a typical client",
    )
    args = parser.parse_args()
    for mode in args.engine_process.split(","):
        for clients in (int(c) for c in args.clients.split(",")):
            measure(mode, clients, args)


if __name__ == "__main__":
    main()
