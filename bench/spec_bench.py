"""Speculative decoding (n-gram drafts) on the default model: edit and free-form chat.

Prints, for the same model, threads and settings, decode tokens/s (from the first streamed
token on, as llama-server's predicted_per_second) without and with
``--speculative ngram`` (through the engine directly, in-process):
  1. an edit workload: the prompt holds a ~300-token story, the reply repeats it with one
     small change (greedy, stops at end of generation, max_tokens about the story's length),
     at 1 and 4 streams (target >= 1.2x on 2 CPU cores);
  2. free-form chat (essays, no repetition) at 1 and 8 streams (target >= 0.97x);
  with the drafts' acceptance rate and mean accepted draft length (per CPU-second: the
  same ratio in process CPU time, which a busy machine distorts less, best with
  --threads 1), and the batching
  ceiling of the machine (tokens/s of one decode of 8 tokens over 8 decodes of one);
  3. llama-server with ``--spec-type ngram-simple`` and ``ngram-mod`` on the edit workload,
     when /tmp/lora/llama-build/bin/llama-server (or $LLAMA_SERVER) exists.

    python bench/spec_bench.py                 # full run (several minutes on 2 cores)
    python bench/spec_bench.py --quick         # one stream each, shorter replies
    python bench/spec_bench.py --repeat 5      # best of 5 alternated runs per row (default 3)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from server_compare import amx_safe_args

from app.engine.backend import BatchToken
from app.engine.llama import load_backend
from app.engine.service import LlamaEngine
from app.engine.types import EngineConfig, EngineStats, GenerationRequest, SamplingParams
from app.models.registry import resolve_model
from app.settings import DEFAULT_MODEL, DEFAULT_MODELS_DIR

STORY = (
    "Mira kept a small bakery at the end of Harbour Street. Every morning she lit the oven "
    "before dawn, kneaded the dough for the rye loaves, and set out the honey buns on the "
    "blue tray by the window. Fishermen came in first, cold and quiet, and left with warm "
    "bread under their coats. At noon the school children arrived, counting coins for the "
    "cinnamon rolls, and the old teacher bought two seed loaves for the staff room. In the "
    "afternoon the bakery was calm: Mira cleaned the trays, wrote letters to her sister in "
    "the city, and listened to the gulls on the roof. When the ferry horn sounded at five, "
    "the last customers hurried in for whatever was left. In the evening Mira swept the "
    "floor, fed the grey cat that slept on the flour sacks, and wrote the next day's list "
    "on the chalkboard by the door. Then she locked up, walked along the harbour wall, and "
    "counted the boats coming home before the lights of the lighthouse turned on."
)
CHANGES = ("call the cat 'Pepper'", "make the tray green", "make the sister live abroad", "")
TOPICS = ("the sea", "a city", "a forest", "the moon", "a river", "music", "a train", "winter")
SYSTEM = "You are a helpful assistant."


def chatml(user: str) -> str:
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def edit_prompt(i: int) -> str:
    change = CHANGES[i % len(CHANGES)] or "fix any typo"
    return chatml(f"Rewrite this story word for word, but {change}:\n\n{STORY}")


def chat_prompt(i: int) -> str:
    return chatml(f"Write a long essay about {TOPICS[i % len(TOPICS)]}.")


@dataclass
class Result:
    tokens: int
    seconds: float
    cpu_seconds: float  # the process's CPU time: with --threads 1, robust to a busy machine
    drafted: int
    accepted: int
    verifications: int

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    @property
    def cpu_rate(self) -> float:
        return self.tokens / self.cpu_seconds

    def acceptance(self) -> str:
        if not self.drafted:
            return "-"
        mean = self.accepted / self.verifications if self.verifications else 0.0
        return f"{self.accepted / self.drafted:.2f} (mean accepted {mean:.1f})"


async def run_engine(
    engine: LlamaEngine, prompts: list[str], max_tokens: int, spec: bool
) -> Result:
    """The decode phase only (from the first streamed token to the end), as llama-server's
    ``predicted_per_second``: the prompts' prefill is the same with and without drafts."""
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    before = engine.stats()
    first: list[tuple[float, float]] = []  # (wall, CPU) when a stream's first token came

    async def one(i: int, prompt: str) -> int:
        request = GenerationRequest(f"r{time.monotonic_ns()}-{i}", prompt, params, speculative=spec)
        n = 0
        async for event in engine.submit(request):
            if event.token_id is not None and n == 0:
                first.append((time.perf_counter(), time.process_time()))
                n = 1
            if event.usage is not None:
                n = event.usage.completion_tokens
        return n - 1  # the first token came from the prefill

    counts = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    seconds = time.perf_counter() - min(w for w, _ in first)
    cpu = time.process_time() - min(c for _, c in first)
    after = engine.stats()
    return Result(sum(counts), seconds, cpu, *_draft_delta(before, after))


def _draft_delta(before: EngineStats, after: EngineStats) -> tuple[int, int, int]:
    return (
        after.draft_tokens_total - before.draft_tokens_total,
        after.draft_accepted_total - before.draft_accepted_total,
        after.draft_verifications_total - before.draft_verifications_total,
    )


def ceiling(config: EngineConfig) -> float:
    """Tokens/s of one decode of 8 tokens over that of one token (the batching gain)."""
    backend = load_backend(config)
    try:
        prompt = backend.tokenize(chatml(STORY), add_special=True)
        base = len(prompt)
        backend.decode([BatchToken(t, i, 0, i == base - 1) for i, t in enumerate(prompt)])
        times: dict[int, list[float]] = {1: [], 8: []}
        for _ in range(20):
            for n in times:
                started = time.perf_counter()
                backend.decode([BatchToken(100 + i, base + i, 0, True) for i in range(n)])
                times[n].append(time.perf_counter() - started)
                backend.clear_seq(0, base)
        one, eight = (sorted(times[n])[len(times[n]) // 2] for n in (1, 8))
        return 8 * one / eight
    finally:
        backend.close()


def llama_server(
    binary: Path, model: str, spec: str | None, threads: int, prompt: str, max_tokens: int
) -> float | None:
    """Tokens/s of one edit request on llama-server (None when it does not start)."""
    port = 18431
    cmd = [
        str(binary),
        "-m",
        model,
        "--port",
        str(port),
        "-t",
        str(threads),
        "-c",
        "4096",
        "-np",
        "1",
        "--no-webui",
        *amx_safe_args(),
    ]
    if spec:
        cmd += ["--spec-type", spec]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            return None
        body = json.dumps(
            {"prompt": prompt, "n_predict": max_tokens, "temperature": 0, "cache_prompt": False}
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/completion", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            reply = json.loads(response.read())
        timings = reply.get("timings", {})
        return float(timings.get("predicted_per_second", 0.0)) or None
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def engine_table(args: argparse.Namespace, model: str) -> None:
    """The engine rows: each workload without and with n-gram drafts."""
    edit_tokens = 160 if args.quick else 360
    chat_tokens = 64 if args.quick else 128
    rows = [("edit", 1, edit_tokens), ("chat", 1, chat_tokens)]
    if not args.quick:
        rows += [("edit", 4, edit_tokens), ("chat", 8, chat_tokens)]
    config = EngineConfig(
        model_path=model,
        n_slots=8,
        n_ctx_slot=1024,
        n_threads=args.threads,
        cache_ram_mb=0,
        prompt_cache=False,
        speculative="ngram",
        draft_max=args.draft_max,
    )
    print(f"load {os.getloadavg()[0]:.2f}; model {Path(model).name}; threads {args.threads}")
    print(f"batching ceiling (8 tokens in one decode vs 8 decodes): {ceiling(config):.2f}x")
    engine = LlamaEngine(config)
    await engine.start()
    try:
        await run_engine(engine, [chat_prompt(0)], 8, False)  # warm up
        print(
            f"{'workload':10} {'streams':>7} {'off tok/s':>10} {'ngram tok/s':>12} "
            f"{'speed-up':>8} {'per CPU-s':>9}  acceptance"
        )
        for kind, streams, max_tokens in rows:
            make = edit_prompt if kind == "edit" else chat_prompt
            prompts = [make(i) for i in range(streams)]
            # Alternated, best of --repeat each: a shared machine's load comes and goes.
            offs, ons = [], []
            for _ in range(args.repeat):
                offs.append(await run_engine(engine, prompts, max_tokens, False))
                ons.append(await run_engine(engine, prompts, max_tokens, True))
            off = max(offs, key=lambda r: r.rate)
            on = max(ons, key=lambda r: r.rate)
            cpu = max(r.cpu_rate for r in ons) / max(r.cpu_rate for r in offs)
            print(
                f"{kind:10} {streams:>7} {off.rate:>10.1f} {on.rate:>12.1f} "
                f"{on.rate / off.rate:>7.2f}x {cpu:>8.2f}x  {on.acceptance()}"
            )
    finally:
        await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--draft-max", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each row (best counts)")
    args = parser.parse_args()
    model = str(resolve_model(DEFAULT_MODEL, Path(DEFAULT_MODELS_DIR)))
    asyncio.run(engine_table(args, model))
    edit_tokens = 160 if args.quick else 360
    binary = Path(os.environ.get("LLAMA_SERVER", "/tmp/lora/llama-build/bin/llama-server"))
    if not binary.exists():
        print(f"llama-server: {binary} not found (skipped)")
        return
    for spec in (None, "ngram-simple", "ngram-mod"):
        rate = llama_server(binary, model, spec, args.threads, edit_prompt(0), edit_tokens)
        label = spec or "no speculation"
        print(
            f"llama-server edit 1 stream, {label}: "
            + (f"{rate:.1f} tok/s" if rate else "did not run")
        )


if __name__ == "__main__":
    main()
