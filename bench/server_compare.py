"""cria-server against llama.cpp's own ``llama-server``, over HTTP + SSE, in one run.

Both servers serve the same GGUF file with the same threads, slots and context per slot;
each scenario runs on one server, then the other, alternating, ``--repeat`` times:

  single    1 stream, ``--tokens`` tokens (ignore_eos, greedy): tokens/s
  streams8  8 concurrent streams on 8 slots: aggregate tokens/s
  chat      6 users x 12 turns on 4 slots, each turn sending the whole history (a chat
            client): p50 time to first token at the last two turns; prompt tokens served
            from cache
  arrival   7 streams decoding when a ~1,500-token prompt arrives: the streams' p99
            inter-token gap from its arrival until its first token, against their steady
            p50 before it

Build llama-server from the pinned llama-cpp-python sdist's ``vendor/llama.cpp`` (same
llama.cpp as our binding)::

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
    tar xzf llama_cpp_python-0.3.36.tar.gz
    cmake -S llama_cpp_python-0.3.36/vendor/llama.cpp -B build -DCMAKE_BUILD_TYPE=Release \\
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF
    cmake --build build --target llama-server -j
    python bench/server_compare.py --llama-server build/bin/llama-server

The client is the same for both (httpx, only counting events), and runs on the same host:
on a 2-core machine it takes CPU from both servers alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.engine.llama.cpu import read_cpu_facts

REPO_ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["the sea", "a city", "a forest", "the moon", "a river", "music", "a train", "winter"]
USAGE = re.compile(rb'"completion_tokens":\s*(\d+)')
CACHED = re.compile(rb'"cached_tokens":\s*(\d+)')
PROMPT_N = re.compile(rb'"prompt_tokens":\s*(\d+)')


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]


@dataclass
class StreamResult:
    ttft: float = 0.0
    tokens: int = 0
    cached: int = 0
    prompt: int = 0
    text: list[str] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time of each content event


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("server did not become ready")


def start_cria(args: argparse.Namespace, parallel: int) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "app", "serve", "--model", args.model, "--port", str(port)]
    cmd += ["--parallel", str(parallel), "--ctx-size", str(args.ctx), "--log-level", "warning"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return Server("cria", url, proc)


def amx_safe_args() -> list[str]:
    """``--no-repack`` for llama-server on an AMX CPU: the same guard as cria-server's loader.

    llama.cpp's AMX matmul (an extra buffer type, which ``--no-repack`` turns off) segfaults on
    the first decode on some AMX CPUs (llama.cpp #20824); our loader turns extra buffer types
    off there, so the comparison runs both servers the same way.
    """
    return ["--no-repack"] if read_cpu_facts().has_amx else []


def start_llama(args: argparse.Namespace, parallel: int) -> Server:
    port = free_port()
    cmd = [args.llama_server, "-m", args.model, "--port", str(port), "--host", "127.0.0.1"]
    cmd += ["-np", str(parallel), "-c", str(args.ctx * parallel), "-b", "512", "--no-webui"]
    cmd += amx_safe_args()
    if args.threads:
        cmd += ["-t", str(args.threads), "-tb", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return Server("llama-server", url, proc)


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


async def stream_chat(
    client: httpx.AsyncClient,
    url: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    *,
    ignore_eos: bool = True,
    keep_text: bool = False,
) -> StreamResult:
    body = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": ignore_eos,
        "cache_prompt": True,
    }
    try:
        return await _stream_chat(client, url, body, keep_text)
    except httpx.RemoteProtocolError:
        # A pooled keep-alive connection the server closed just as it was reused: once more.
        return await _stream_chat(client, url, body, keep_text)


async def _stream_chat(
    client: httpx.AsyncClient, url: str, body: dict[str, object], keep_text: bool
) -> StreamResult:
    result = StreamResult()
    start = time.perf_counter()
    tail = b""
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:500]}")
        async for data in response.aiter_bytes():
            now = time.perf_counter()
            n = data.count(b'"content":"') - data.count(b'"content":""')
            if n > 0:
                if not result.ttft:
                    result.ttft = now - start
                result.arrivals.extend([now] * n)
            if keep_text:
                tail += data
            else:
                tail = (tail + data)[-4096:]
    if keep_text:
        for line in tail.split(b"\n"):
            if line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or []:
                    result.text.append((choice.get("delta") or {}).get("content") or "")
    match = USAGE.findall(tail)
    result.tokens = int(match[-1]) if match else len(result.arrivals)
    cached = CACHED.findall(tail)
    result.cached = int(cached[-1]) if cached else 0
    prompt = PROMPT_N.findall(tail)
    result.prompt = int(prompt[-1]) if prompt else 0
    return result


def question(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}]


async def single(client: httpx.AsyncClient, url: str, args: argparse.Namespace) -> float:
    start = time.perf_counter()
    result = await stream_chat(client, url, question(0), args.tokens)
    return result.tokens / (time.perf_counter() - start)


async def streams8(client: httpx.AsyncClient, url: str, args: argparse.Namespace) -> float:
    start = time.perf_counter()
    results = await asyncio.gather(
        *(stream_chat(client, url, question(i), args.tokens) for i in range(8))
    )
    return sum(r.tokens for r in results) / (time.perf_counter() - start)


async def chat_users(
    client: httpx.AsyncClient, url: str, args: argparse.Namespace
) -> tuple[float, float, float]:
    """6 users x 12 turns: (p50 TTFT at the last two turns, cached share, wall seconds)."""
    users, turns = 6, 12
    ttft: dict[int, list[float]] = {t: [] for t in range(turns)}
    cached = prompt = 0
    start = time.perf_counter()

    async def user(u: int) -> None:
        nonlocal cached, prompt
        history: list[dict[str, str]] = [
            {"role": "system", "content": "You are a helpful assistant."}
        ]
        for t in range(turns):
            topic = TOPICS[(u + t) % len(TOPICS)]
            history.append(
                {"role": "user", "content": f"User {u}, turn {t}: tell me about {topic}."}
            )
            result = await stream_chat(
                client, url, history, args.chat_tokens, ignore_eos=True, keep_text=True
            )
            ttft[t].append(result.ttft)
            cached += result.cached
            prompt += result.prompt
            history.append({"role": "assistant", "content": "".join(result.text)})

    await asyncio.gather(*(user(u) for u in range(users)))
    last = ttft[turns - 2] + ttft[turns - 1]
    return statistics.median(last), cached / max(prompt, 1), time.perf_counter() - start


async def arrival(
    client: httpx.AsyncClient, url: str, args: argparse.Namespace
) -> tuple[float, float, float]:
    """(steady p50 gap, p99 gap while the long prompt is prefilled, its TTFT), seconds."""
    long_text = " ".join(f"Fact {i}: the {TOPICS[i % 8]} is near." for i in range(150))
    long_messages = [{"role": "user", "content": long_text + " Summarize."}]
    streams = [
        asyncio.ensure_future(stream_chat(client, url, question(i), args.arrival_tokens))
        for i in range(7)
    ]
    await asyncio.sleep(args.arrival_delay)
    t_arrive = time.perf_counter()
    long_result = await stream_chat(client, url, long_messages, 4)
    t_first = t_arrive + long_result.ttft
    results = await asyncio.gather(*streams)
    steady: list[float] = []
    during: list[float] = []
    for r in results:
        for a, b in zip(r.arrivals, r.arrivals[1:], strict=False):
            if b <= t_arrive:
                steady.append(b - a)
            elif a <= t_first + 0.05:  # gaps that overlap the prefill
                during.append(b - a)
    p99 = sorted(during)[max(0, int(len(during) * 0.99) - 1)] if during else float("nan")
    return statistics.median(steady), p99, long_result.ttft


Scenario = Callable[[httpx.AsyncClient, str, argparse.Namespace], Awaitable[object]]


async def run_scenario(server: Server, scenario: Scenario, args: argparse.Namespace) -> object:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await stream_chat(client, server.url, question(1), 8)  # warm-up
        return await scenario(client, server.url, args)


def measure(args: argparse.Namespace, parallel: int, scenario: Scenario) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {"cria": [], "llama-server": []}
    starters = {"cria": start_cria, "llama-server": start_llama}
    for _ in range(args.repeat):
        for start in (starters[name] for name in args.servers):
            server = start(args, parallel)
            try:
                out[server.name].append(asyncio.run(run_scenario(server, scenario, args)))
            finally:
                stop(server)
    return out


def ratio_line(name: str, cria: list[float], llama: list[float], unit: str) -> None:
    if not cria or not llama:
        print(f"{name:34} cria {cria} llama-server {llama} {unit}")
        return
    c, ll = statistics.median(cria), statistics.median(llama)
    print(
        f"{name:34}{c:10.1f}{ll:14.1f}  {unit:8} ratio {c / ll:5.2f}"
        f"   (cria {min(cria):.1f}-{max(cria):.1f}, llama-server {min(llama):.1f}-{max(llama):.1f})"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER", "llama-server"))
    parser.add_argument(
        "--model", default=str(REPO_ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    )
    parser.add_argument("--threads", type=int, default=0, help="0: each server's default")
    parser.add_argument("--ctx", type=int, default=2048, help="context tokens per slot")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--chat-tokens", type=int, default=96)
    parser.add_argument("--arrival-tokens", type=int, default=160)
    parser.add_argument("--arrival-delay", type=float, default=1.5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--servers", nargs="*", default=["cria", "llama-server"], help="a smoke run: cria only"
    )
    parser.add_argument(
        "--only", nargs="*", default=["single", "streams8", "chat", "arrival"], help="scenarios"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print(
        f"model {Path(args.model).name}, threads {args.threads or 'default'}, ctx/slot "
        f"{args.ctx}, {os.cpu_count()} CPUs, repeat {args.repeat} (alternating servers)"
    )
    print(f"{'':34}{'cria':>10}{'llama-server':>14}")
    if "single" in args.only:
        r = measure(args, 1, single)
        ratio_line("1 stream", r["cria"], r["llama-server"], "tok/s")  # type: ignore[arg-type]
    if "streams8" in args.only:
        r = measure(args, 8, streams8)
        ratio_line("8 streams aggregate", r["cria"], r["llama-server"], "tok/s")  # type: ignore[arg-type]
    if "chat" in args.only:
        r = measure(args, 4, chat_users)
        for name in ("cria", "llama-server"):
            for ttft, share, wall in r[name]:  # type: ignore[misc, attr-defined]
                print(
                    f"  chat {name:13} p50 TTFT turns 11-12 {ttft:6.2f} s, "
                    f"cached {share:5.1%} of prompt tokens, wall {wall:5.1f} s"
                )
        ratio_line(
            "6 users x 12 turns, p50 TTFT last 2",
            [x[0] for x in r["cria"]],  # type: ignore[index]
            [x[0] for x in r["llama-server"]],  # type: ignore[index]
            "s",
        )
    if "arrival" in args.only:
        r = measure(args, 8, arrival)
        for name in ("cria", "llama-server"):
            for p50, p99, ttft in r[name]:  # type: ignore[misc]
                print(
                    f"  arrival {name:13} steady p50 {p50 * 1000:6.1f} ms, p99 during prefill "
                    f"{p99 * 1000:6.1f} ms ({p99 / p50:4.2f}x), long prompt TTFT {ttft:5.2f} s"
                )


if __name__ == "__main__":
    main()
