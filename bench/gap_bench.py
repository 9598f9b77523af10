"""Does a heavy request freeze other users? Issue 17's table, row by row, on ``cria serve``.

For each row of the issue's table (the attacker's request as filed, plus the largest
legitimate request of the same kind), one greedy stream (``--tokens`` tokens, ignore_eos)
runs while the row's requests are sent next to it, and /health is asked every 50 ms
meanwhile. Printed per row: the answers' statuses, the stream's longest gap between two
tokens, the slowest /health, and whether they meet the issue's targets (gap < 250 ms,
/health < 100 ms). A ``quiet`` row first: the same stream alone.

    python bench/gap_bench.py                      # starts cria serve on the default model
    python bench/gap_bench.py --url http://127.0.0.1:8000   # a server already running

On a shared machine the figures are indicative: the load average is printed with them.
A server started here has embeddings on (rows 7), 4 slots and --ctx per slot.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_compare import REPO_ROOT, Server, free_port, stop, stream_chat, wait_ready

GAP_TARGET_S = 0.250
HEALTH_TARGET_S = 0.100
USER = {"role": "user", "content": "hi"}
Heavy = Callable[[httpx.AsyncClient], Awaitable[list[int]]]


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, object]) -> int:
    return (await client.post(path, json=body)).status_code


def _format(schema: dict[str, object]) -> dict[str, object]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


async def row1_penalty(client: httpx.AsyncClient) -> list[int]:
    options = {"repeat_last_n": 500_000_000, "num_predict": 4}
    body = {"model": "m", "prompt": "hi", "stream": False, "options": options}
    return [await _post(client, "/api/generate", body)]


async def row2_schemas(client: httpx.AsyncClient) -> list[int]:
    schemas = [
        {"type": "array", "items": {"type": "integer"}, "minItems": 4_000_000},
        {"enum": [f"v{i}" for i in range(20_000)]},
        {"type": "array", "items": {"type": "integer"}, "maxItems": 2000},  # legal
    ]
    return [
        await _post(
            client,
            "/v1/chat/completions",
            {"messages": [USER], "max_tokens": 4, "response_format": _format(schema)},
        )
        for schema in schemas
    ]


async def row3_grammars(client: httpx.AsyncClient) -> list[int]:
    grammars = [
        "root ::= " + " ".join(["[a-z]{0,100000}"] * 40),
        'root ::= (("a"?){0,2000}){0,2000}',
        "root ::= " + " | ".join(f'"v{i}"' for i in range(1000)),  # legal
    ]
    body: dict[str, object] = {"prompt": "hi", "max_tokens": 4}
    return [await _post(client, "/v1/completions", {**body, "grammar": g}) for g in grammars]


async def row4_flood(client: httpx.AsyncClient) -> list[int]:
    return [
        await _post(client, "/tokenize", {"content": "<|im_end|>" * 100_000}),
        await _post(client, "/tokenize", {"content": "<|im_end|>" * 6_000}),  # legal
    ]


async def row4_turns(client: httpx.AsyncClient) -> list[int]:
    many = [{"role": ("user", "assistant")[i % 2], "content": "x"} for i in range(30_001)]
    legal = many[:4095]
    return [
        await _post(client, "/v1/chat/completions", {"messages": many, "max_tokens": 2}),
        await _post(client, "/v1/chat/completions", {"messages": legal, "max_tokens": 2}),
    ]


async def row5_heads(client: httpx.AsyncClient) -> list[int]:
    url = httpx.URL(str(client.base_url))
    sockets = [await asyncio.open_connection(url.host, url.port) for _ in range(32)]
    for _, writer in sockets:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 8000)
    sockets[0][1].write(b"b" * 4_000_000)  # over the head cap: a 431
    await asyncio.gather(*(writer.drain() for _, writer in sockets), return_exceptions=True)
    try:
        first = await asyncio.wait_for(sockets[0][0].readline(), 30)
    except ConnectionResetError:  # closed with our bytes unread: the 431 may be lost
        first = b"- 0"
    await asyncio.sleep(1.0)
    for _, writer in sockets:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for _, writer in sockets), return_exceptions=True)
    return [int(first.split()[1]) if first else 0]  # 0: closed (reset) without an answer


async def row6_metrics(client: httpx.AsyncClient) -> list[int]:
    statuses = {(await client.get(f"/no/{i}/" + "q" * 1000)).status_code for i in range(1300)}
    return [*sorted(statuses), (await client.get("/metrics")).status_code]


async def row7_embed(client: httpx.AsyncClient) -> list[int]:
    return [
        await _post(client, "/api/embed", {"model": "m", "input": ["x"] * 2000}),
        await _post(client, "/api/embed", {"model": "m", "input": [f"t {i}" for i in range(256)]}),
    ]


async def row8_stops(client: httpx.AsyncClient) -> list[int]:
    body: dict[str, object] = {"prompt": "Once upon a time", "max_tokens": 16, "ignore_eos": True}
    huge = ["s" * 16_384 + str(i) for i in range(64)]
    legal = ["a" * 2000 + str(i) for i in range(4)]
    return [
        await _post(client, "/v1/completions", {**body, "stop": huge}),
        await _post(client, "/v1/completions", {**body, "stop": legal}),
    ]


ROWS: list[tuple[str, Heavy]] = [
    ("1 repeat_last_n 5e8", row1_penalty),
    ("2 schema counts, 20k enum", row2_schemas),
    ("3 raw GBNF", row3_grammars),
    ("4 <|im_end|> flood /tokenize", row4_flood),
    ("4 30k turns; 4095 turns", row4_turns),
    ("5 unfinished heads", row5_heads),
    ("6 1300 404s + /metrics", row6_metrics),
    ("7 /api/embed 2000 inputs", row7_embed),
    ("8 64 stops of 16 KB", row8_stops),
]


async def health_poll(client: httpx.AsyncClient, until: asyncio.Event) -> list[float]:
    """/health latencies, one ask every 50 ms until ``until`` is set."""
    found = []
    while not until.is_set():
        started = time.perf_counter()
        await client.get("/health")
        found.append(time.perf_counter() - started)
        await asyncio.sleep(0.05)
    return found


async def streams(
    client: httpx.AsyncClient, url: str, tokens: int, until: asyncio.Event
) -> list[float]:
    """Gaps between tokens of greedy streams, one after another, until ``until`` is set
    (at least one stream: the heavy work is always overlapped by a stream)."""
    gaps: list[float] = []
    messages = [{"role": "user", "content": "Count to one hundred."}]
    while True:
        result = await stream_chat(client, url, messages, tokens)
        arrivals = result.arrivals
        gaps += [b - a for a, b in itertools.pairwise(arrivals)]
        if until.is_set():
            return gaps


async def measure(
    client: httpx.AsyncClient, url: str, heavy: Heavy | None, tokens: int
) -> tuple[list[int], float, float, float]:
    """(statuses, longest gap, median gap, slowest /health) of streams next to ``heavy``."""
    done = asyncio.Event()
    stream = asyncio.create_task(streams(client, url, tokens, done))
    polls = asyncio.create_task(health_poll(client, done))
    await asyncio.sleep(0.3)  # the stream is generating
    statuses = await heavy(client) if heavy is not None else []
    done.set()
    gaps = await stream
    latencies = await polls
    return statuses, max(gaps), statistics.median(gaps), max(latencies)


def start_server(args: argparse.Namespace) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "app", "serve", "--port", str(port), "--parallel", "4"]
    cmd += ["--ctx-size", str(args.ctx), "--embeddings", "--log-level", "warning"]
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return Server("cria", url, proc)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def run(url: str, tokens: int) -> None:
    # Idle pooled connections expire before the server closes them (its head timeout, 10 s).
    limits = httpx.Limits(max_connections=64, keepalive_expiry=4.0)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await measure(client, url, None, 16)  # warm up
        print(f"load average before: {loadavg()}")
        print(f"{'row':<30} {'statuses':<22} {'gap max':>8} {'gap p50':>8} {'health':>8}  targets")
        rows: list[tuple[str, Heavy | None]] = [("quiet (the stream alone)", None), *ROWS]
        for name, heavy in rows:
            statuses, gap, p50, health = await measure(client, url, heavy, tokens)
            ok = "ok" if gap < GAP_TARGET_S and health < HEALTH_TARGET_S else "MISSED"
            shown = ",".join(map(str, statuses)) or "-"
            print(
                f"{name:<30} {shown:<22} {gap * 1000:>6.0f}ms {p50 * 1000:>6.0f}ms "
                f"{health * 1000:>6.0f}ms  {ok}",
                flush=True,
            )
        print(f"load average after: {loadavg()}")
        gap_ms, health_ms = GAP_TARGET_S * 1000, HEALTH_TARGET_S * 1000
        print(f"targets: gap < {gap_ms:.0f} ms, /health < {health_ms:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", help="a running server (else cria serve is started)")
    parser.add_argument("--model", help="model for the started server (default: the default)")
    parser.add_argument("--ctx", type=int, default=2048, help="context tokens per slot")
    parser.add_argument("--tokens", type=int, default=64, help="tokens of the measured stream")
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, args.tokens))
        return
    server = start_server(args)
    try:
        asyncio.run(run(server.url, args.tokens))
    finally:
        stop(server)


if __name__ == "__main__":
    main()
