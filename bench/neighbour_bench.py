"""A busy neighbour: cria-server and llama-server while another process takes CPU.

A laptop also runs the frontend's dev server, a browser, a compile. On a small machine
ggml's decode threads wait for each other at every barrier, so a neighbour that takes one
core can cost far more than one core's share. For each neighbour and each server setting,
three greedy 1-stream requests (``--tokens``, ignore_eos) and one 8-stream round, tokens/s:

  neighbours   quiet; ``busy``: one plain busy-loop process; ``compile``: a 2-job C compile
               loop (``cc -O2`` on a generated file, two at a time)
  settings     cria-server default threads (which follow the load), ``--threads 1``,
               ``--threads 2``; llama-server ``-t 2`` and ``-t 1``

The server starts (and warms up) before the neighbour does, as on a laptop where the
compile starts while the server runs.

    python bench/neighbour_bench.py --llama-server /path/to/llama-server
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_compare import (
    REPO_ROOT,
    Server,
    question,
    start_cria,
    start_llama,
    stop,
    stream_chat,
)

C_SOURCE = "\n".join(
    f"double f{i}(double x) {{ double s = 0; for (int k = 0; k < {i + 3}; k++) s += x * k / "
    f"(k + {i}.5); return s; }}"
    for i in range(1500)
)


@contextmanager
def neighbour(kind: str) -> Iterator[None]:
    """Run the named neighbour for the duration of the block."""
    if kind == "quiet":
        yield
        return
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "busy":
            procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        else:
            src = Path(tmp) / "big.c"
            src.write_text(C_SOURCE)
            loop = f"while true; do cc -O2 -c {src} -o {tmp}/$RANDOM.o; done"
            procs += [subprocess.Popen(["sh", "-c", loop]) for _ in range(2)]
        time.sleep(1.5)  # let it start (and let a load-following server notice it)
        try:
            yield
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
            subprocess.run(["pkill", "-f", f"{tmp}/big.c"], check=False)


async def one_stream(client: httpx.AsyncClient, url: str, tokens: int) -> list[float]:
    rates = []
    for i in range(3):
        start = time.perf_counter()
        result = await stream_chat(client, url, question(i), tokens)
        rates.append(result.tokens / (time.perf_counter() - start))
    return rates


async def eight_streams(client: httpx.AsyncClient, url: str, tokens: int) -> float:
    start = time.perf_counter()
    results = await asyncio.gather(
        *(stream_chat(client, url, question(i), tokens) for i in range(8))
    )
    return sum(r.tokens for r in results) / (time.perf_counter() - start)


async def run(server: Server, kind: str, tokens: int, batch_tokens: int) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await stream_chat(client, server.url, question(1), 8)  # warm-up
        with neighbour(kind):
            single = statistics.median(await one_stream(client, server.url, tokens))
            batched = await eight_streams(client, server.url, batch_tokens)
    return single, batched


def settings(args: argparse.Namespace) -> list[tuple[str, Callable[[], Server]]]:
    def cria(threads: int) -> Callable[[], Server]:
        return lambda: start_cria(argparse.Namespace(**{**vars(args), "threads": threads}), 8)

    def llama(threads: int) -> Callable[[], Server]:
        return lambda: start_llama(argparse.Namespace(**{**vars(args), "threads": threads}), 8)

    out = [("cria default", cria(0)), ("cria --threads 1", cria(1)), ("cria --threads 2", cria(2))]
    if args.llama_server:
        out += [("llama-server -t 2", llama(2)), ("llama-server -t 1", llama(1))]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER", ""))
    parser.add_argument(
        "--model", default=str(REPO_ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    )
    parser.add_argument("--ctx", type=int, default=1024, help="context tokens per slot")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch-tokens", type=int, default=32, help="per stream, 8 streams")
    parser.add_argument("--neighbours", default="quiet,busy,compile")
    parser.add_argument("--servers", default="", help="substrings of the settings to run")
    args = parser.parse_args()
    print(f"{'neighbour':10}{'server':22}{'1 stream':>10}{'8 streams':>11}  tokens/s")
    for kind in args.neighbours.split(","):
        for name, start in settings(args):
            if args.servers and not any(w in name for w in args.servers.split(",")):
                continue
            server = start()
            try:
                single, batched = asyncio.run(run(server, kind, args.tokens, args.batch_tokens))
            finally:
                stop(server)
            print(f"{kind:10}{name:22}{single:10.1f}{batched:11.1f}", flush=True)


if __name__ == "__main__":
    main()
