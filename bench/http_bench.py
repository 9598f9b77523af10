"""HTTP + SSE overhead: tokens/s through the server vs the engine alone.

Measures, on the same model and settings, with greedy requests (so both paths generate
the same tokens):
  1. single stream: one request at a time, completion tokens / wall time;
  2. aggregate: N concurrent streams, total completion tokens / wall time.
first with ``LlamaEngine`` in-process, then through a real uvicorn process (SSE parsed
by the client). Prints both and the ratio (target: >= 0.95).

    python bench/http_bench.py                       # default model, 8 streams, 128 tokens
    python bench/http_bench.py --max-tokens 16 --repeat 1   # a quick smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from app.engine.service import LlamaEngine
from app.engine.types import GenerationRequest, SamplingParams
from app.models.registry import resolve_model
from app.serving.chat_template import needs_bos, render_chat
from app.settings import DEFAULT_MODEL, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe a day at the beach.",
    "Write a poem about autumn leaves.",
    "Explain why the sky is blue.",
    "Describe how bread is made.",
    "Write a letter to a friend about a trip.",
    "Explain what a computer does.",
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model reference")
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per request")
    parser.add_argument("--ctx-size", type=int, default=1024, help="context per slot")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument(
        "--engine-process",
        choices=("on", "off"),
        default="on",
        help="the server's engine in a worker process (on, the default) or in-process (off)",
    )
    return parser.parse_args()


def bench_settings(args: argparse.Namespace, model: Path) -> Settings:
    return Settings(
        model=str(model),
        parallel=max(args.streams, 1),
        ctx_size=args.ctx_size,
        threads=args.threads,
        prompt_cache=False,  # every run prefills: both paths do the same work each time
        engine_process=args.engine_process,
    )


def chat_body(question: str, max_tokens: int, *, stream: bool = True) -> dict[str, object]:
    body: dict[str, object] = {
        "messages": [{"role": "user", "content": question}],
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "ignore_eos": True,  # both paths generate exactly max_tokens
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


Run = Callable[[list[str]], Awaitable[int]]  # generate for each question; total tokens


async def measure(run: Run, questions: list[str], repeat: int) -> float:
    """Median tokens/s of ``run`` over ``repeat`` runs."""
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        tokens = await run(questions)
        rates.append(tokens / (time.perf_counter() - started))
    return statistics.median(rates)


async def engine_rates(settings: Settings, args: argparse.Namespace) -> tuple[float, float]:
    engine = LlamaEngine(settings.engine_config(Path(settings.model)))
    await engine.start()
    info = engine.model_info()
    counter = iter(range(10**9))

    async def one(question: str) -> int:
        messages = [{"role": "user", "content": question}]  # as the HTTP route renders it
        prompt = render_chat(
            info.chat_template, messages, bos_token=info.bos_token, eos_token=info.eos_token
        )
        request = GenerationRequest(
            f"bench-{next(counter)}",
            prompt,
            SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True),
            add_special=needs_bos(prompt, info.bos_token),
        )
        async for event in engine.submit(request):
            if event.usage is not None:
                return event.usage.completion_tokens
        return 0

    async def run(questions: list[str]) -> int:
        return sum(await asyncio.gather(*(one(q) for q in questions)))

    try:
        await run(QUESTIONS[:1])  # warm-up
        single = await measure(run, QUESTIONS[:1], args.repeat)
        many = await measure(run, streams(args), args.repeat)
    finally:
        await engine.stop()
    return single, many


def streams(args: argparse.Namespace) -> list[str]:
    return [QUESTIONS[i % len(QUESTIONS)] for i in range(args.streams)]


def event_loop_cpu_s(pid: int) -> float:
    """CPU seconds of the server's main thread (the event loop: all HTTP work); Linux only."""
    try:
        stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def http_rates(
    base_url: str, args: argparse.Namespace, pid: int
) -> tuple[float, float, float, float]:
    """Single-stream, aggregate and aggregate non-streamed tok/s, and event-loop CPU
    microseconds per streamed token."""
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:

        async def one(question: str) -> int:
            tokens = 0
            body = chat_body(question, args.max_tokens)
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: {") and '"usage":{' in line:
                        tokens = json.loads(line[6:])["usage"]["completion_tokens"]
            return tokens

        async def run(questions: list[str]) -> int:
            return sum(await asyncio.gather(*(one(q) for q in questions)))

        async def plain(question: str) -> int:
            body = chat_body(question, args.max_tokens, stream=False)
            response = await client.post("/v1/chat/completions", json=body)
            return int(response.json()["usage"]["completion_tokens"])

        async def run_plain(questions: list[str]) -> int:
            return sum(await asyncio.gather(*(plain(q) for q in questions)))

        await run(QUESTIONS[:1])  # warm-up
        single = await measure(run, QUESTIONS[:1], args.repeat)
        cpu_before = event_loop_cpu_s(pid)
        tokens = sum([await run(streams(args)) for _ in range(args.repeat)])
        loop_us_per_token = (event_loop_cpu_s(pid) - cpu_before) / max(tokens, 1) * 1e6
        many = await measure(run, streams(args), args.repeat)
        many_plain = await measure(run_plain, streams(args), args.repeat)
    return single, many, many_plain, loop_us_per_token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(settings: Settings) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "CRIA_ENGINE_PROCESS": settings.engine_process,
        "CRIA_MODEL": settings.model,
        "CRIA_PARALLEL": str(settings.parallel),
        "CRIA_CTX_SIZE": str(settings.ctx_size),
        "CRIA_PROMPT_CACHE": "false",
        "CRIA_LOG_LEVEL": "warning",
    }
    if settings.threads is not None:
        env["CRIA_THREADS"] = str(settings.threads)
    command = [sys.executable, "-m", "uvicorn", "--factory", "app.api.main:create_app_from_env"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not become ready")


def main() -> None:
    args = parse_args()
    model = resolve_model(args.model, Settings().models_dir)
    settings = bench_settings(args, model)
    print(
        f"model {model.name}, {args.streams} streams x {args.max_tokens} tokens, "
        f"{settings.parallel} slots, threads {settings.threads or 'auto'}, median of {args.repeat}"
    )
    engine_single, engine_many = asyncio.run(engine_rates(settings, args))
    process, base_url = start_server(settings)
    try:
        http_single, http_many, http_plain, loop_us = asyncio.run(
            http_rates(base_url, args, process.pid)
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"{'':24}{'engine':>12}{'http+sse':>12}{'ratio':>8}")
    for label, engine_rate, http_rate in (
        ("single stream tok/s", engine_single, http_single),
        (f"{args.streams} streams tok/s", engine_many, http_many),
        (f"{args.streams} non-streamed tok/s", engine_many, http_plain),
    ):
        print(f"{label:24}{engine_rate:12.1f}{http_rate:12.1f}{http_rate / engine_rate:8.3f}")
    print(f"server event-loop CPU per streamed token ({args.streams} streams): {loop_us:.0f} us")


if __name__ == "__main__":
    main()
