"""LoRA adapters under load: 8 streams split over 2 adapters + the base, against 8 on the base.

One server with two rank-4 adapters (written like llama.cpp's convert_lora_to_gguf.py does,
``tests/support/lora_writer.py``) on the attention projections of the model, 8 slots:

  base8   8 concurrent streams on the base model: aggregate tokens/s
  mix8    8 concurrent streams, 3 on adapter ``a``, 3 on ``b``, 2 on the base: aggregate
          tokens/s, and its ratio to base8 (the cost of decoding one adapter set per step)

cria names the adapter as the model (``"model": "a"``); llama-server gets the same adapters
(``--lora``, ``--lora-init-without-apply``) and per-request ``"lora": [{"id", "scale"}]``
(an empty list is the base). Both servers run in the same invocation, one after the other,
``--repeat`` times. Build llama-server as ``bench/server_compare.py`` says; without
``--llama-server`` only cria runs::

    python bench/lora_bench.py --repeat 3 --llama-server build/bin/llama-server

``--turns 1,4,8`` instead measures in-process (no HTTP, one LlamaEngine) the mix against the
base with each adapter turn length (``app.engine.lora.LORA_TURN_STEPS``: steps one adapter
set decodes before the next set's turn), to choose that constant.

Numbers on a shared, busy machine are noise: run it on a quiet one.
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
from dataclasses import replace
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the adapter writer is the tests' own

from app.engine.lora import AdapterTurns  # noqa: E402
from app.engine.service import LlamaEngine  # noqa: E402
from app.engine.types import (  # noqa: E402
    EngineConfig,
    GenerationRequest,
    LoraAdapter,
    LoraScale,
    SamplingParams,
)
from bench.server_compare import (  # noqa: E402
    USAGE,
    Server,
    amx_safe_args,
    free_port,
    question,
    stop,
    wait_ready,
)
from tests.support.lora_writer import write_lora  # noqa: E402

MIX = ("a", "a", "a", "b", "b", "b", None, None)  # adapter per stream (None: the base)
BASE = (None,) * 8


def start_cria(args: argparse.Namespace, adapters: dict[str, Path]) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "app", "serve", "--model", args.model, "--port", str(port)]
    cmd += ["--parallel", "8", "--ctx-size", str(args.ctx), "--log-level", "warning"]
    for name, path in adapters.items():
        cmd += ["--lora", f"{name}={path}"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return Server("cria", url, proc)


def start_llama(args: argparse.Namespace, adapters: dict[str, Path]) -> Server:
    port = free_port()
    cmd = [args.llama_server, "-m", args.model, "--port", str(port), "--host", "127.0.0.1"]
    cmd += ["-np", "8", "-c", str(args.ctx * 8), "-b", "512", "--no-webui", *amx_safe_args()]
    cmd += ["--lora-init-without-apply"]
    for path in adapters.values():
        cmd += ["--lora", str(path)]
    if args.threads:
        cmd += ["-t", str(args.threads), "-tb", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return Server("llama-server", url, proc)


def request_body(server: Server, adapter: str | None, i: int, tokens: int) -> dict[str, object]:
    body: dict[str, object] = {
        "messages": question(i),
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    if server.name == "cria":
        body["model"] = adapter or "base"
    else:  # llama-server: ids in --lora order; no entry is the base (scales start at 0)
        ids = {"a": 0, "b": 1}
        body["lora"] = [] if adapter is None else [{"id": ids[adapter], "scale": 1.0}]
    return body


async def one_stream(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> int:
    tail = b""
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for data in response.aiter_bytes():
            tail = (tail + data)[-4096:]
    match = USAGE.findall(tail)
    return int(match[-1]) if match else 0


async def streams(server: Server, plan: tuple[str | None, ...], tokens: int) -> float:
    """Aggregate tokens/s of ``len(plan)`` concurrent streams, one adapter (or None) each."""
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        counts = await asyncio.gather(
            *(
                one_stream(client, server.url, request_body(server, adapter, i, tokens))
                for i, adapter in enumerate(plan)
            )
        )
    return sum(counts) / (time.perf_counter() - start)


def measure(
    args: argparse.Namespace, adapters: dict[str, Path]
) -> dict[str, dict[str, list[float]]]:
    starters = {"cria": start_cria, "llama-server": start_llama}
    names = ["cria"] + (["llama-server"] if args.llama_server else [])
    results: dict[str, dict[str, list[float]]] = {n: {"base8": [], "mix8": []} for n in names}
    for _ in range(args.repeat):
        for name in names:
            server = starters[name](args, adapters)
            try:
                asyncio.run(streams(server, BASE, 8))  # warm-up
                results[name]["base8"].append(asyncio.run(streams(server, BASE, args.tokens)))
                results[name]["mix8"].append(asyncio.run(streams(server, MIX, args.tokens)))
            finally:
                stop(server)
    return results


async def engine_streams(engine: LlamaEngine, plan: tuple[str | None, ...], tokens: int) -> float:
    """In-process aggregate tokens/s of ``len(plan)`` concurrent streams."""
    ids = {"a": 0, "b": 1}
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)

    async def one(i: int, adapter: str | None) -> int:
        lora = () if adapter is None else (LoraScale(ids[adapter]),)
        text = question(i)[0]["content"]
        prompt = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
        request = GenerationRequest(f"r{time.monotonic_ns()}-{i}", prompt, params, lora=lora)
        return sum([event.token_id is not None async for event in engine.submit(request)])

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(i, adapter) for i, adapter in enumerate(plan)))
    return sum(counts) / (time.perf_counter() - start)


async def turn_sweep(args: argparse.Namespace, adapters: dict[str, Path]) -> None:
    """base8 and mix8 in one engine, mix8 with each turn length, ``--repeat`` rounds."""
    lora = tuple(LoraAdapter(i, n, str(p)) for i, (n, p) in enumerate(adapters.items()))
    config = EngineConfig(
        args.model, n_slots=8, n_ctx_slot=args.ctx, n_threads=args.threads or None, lora=lora
    )
    engine = LlamaEngine(replace(config, prompt_cache=False))
    await engine.start()
    turns = [int(t) for t in args.turns.split(",")]
    results: dict[str, list[float]] = {}
    try:
        await engine_streams(engine, BASE, 8)  # warm-up
        for _ in range(args.repeat):
            results.setdefault("base8", []).append(await engine_streams(engine, BASE, args.tokens))
            for steps in turns:
                engine._scheduler._turns = AdapterTurns(steps)  # type: ignore[union-attr]
                rate = await engine_streams(engine, MIX, args.tokens)
                results.setdefault(f"mix8, turn {steps}", []).append(rate)
    finally:
        await engine.stop()
    base8 = statistics.median(results["base8"])
    print(f"in-process, load {os.getloadavg()[0]:.2f}, {args.tokens} tokens per stream")
    for name, runs in results.items():
        rate = statistics.median(runs)
        print(f"{name:16}{rate:10.1f} tok/s{rate / base8:8.2f} of base8")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llama-server", default=os.environ.get("LLAMA_SERVER", ""))
    parser.add_argument(
        "--model", default=str(REPO_ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf")
    )
    parser.add_argument("--threads", type=int, default=0, help="0: each server's default")
    parser.add_argument("--ctx", type=int, default=1024, help="context tokens per slot")
    parser.add_argument("--tokens", type=int, default=96, help="tokens per stream")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--turns", default="", help="e.g. 1,4,8: in-process turn-length sweep")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as folder:
        base = Path(args.model)
        adapters = {
            "a": write_lora(Path(folder) / "a.gguf", base, seed=1),
            "b": write_lora(Path(folder) / "b.gguf", base, seed=2),
        }
        if args.turns:
            asyncio.run(turn_sweep(args, adapters))
            return
        results = measure(args, adapters)
    print(
        f"model {Path(args.model).name}, 2 rank-4 adapters, 8 slots, {args.tokens} tokens per "
        f"stream, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, repeat {args.repeat}"
    )
    print(f"{'':14}{'base8 tok/s':>14}{'mix8 tok/s':>14}{'mix/base':>10}")
    for name, runs in results.items():
        base8, mix8 = statistics.median(runs["base8"]), statistics.median(runs["mix8"])
        print(f"{name:14}{base8:14.1f}{mix8:14.1f}{mix8 / base8:10.2f}")


if __name__ == "__main__":
    main()
