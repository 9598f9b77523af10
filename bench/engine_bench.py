"""Engine speed on the default model: Python overhead, batching gain, TTFT, abort latency.

Prints, for the same model, threads and context settings:
  1. single-stream decode tokens/s: a bare llama-cpp-python low-level loop (batch of one
     token, greedy sampler) vs ``LlamaEngine`` with one slot (target >= 0.95x);
  2. aggregate tokens/s with 1, 2, 4 and 8 concurrent streams on an 8-slot engine
     (target at 8 >= 1.9x the single stream);
  3. time to first token of a new request while 7 streams decode;
  4. abort -> slot free: milliseconds and engine steps until the CANCELLED event, with
     the slot already free in the stats.
Every request is greedy with ignore_eos, so each generates exactly --tokens tokens.

    python bench/engine_bench.py                   # full run (a few minutes on 2 cores)
    python bench/engine_bench.py --tokens 16 --repeat 1 --streams 1,2   # quick smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import llama_cpp  # noqa: TID251 - the bare baseline loop talks to llama.cpp directly

from app.engine.backend import BatchToken, ModelBackend
from app.engine.llama import load_backend
from app.engine.service import LlamaEngine
from app.engine.types import EngineConfig, GenerationRequest, SamplingParams, TokenEvent
from app.models.registry import resolve_model
from app.settings import DEFAULT_MODEL, DEFAULT_MODELS_DIR

SYSTEM = "You are a helpful assistant."
TOPICS = ["the sea", "a city", "a forest", "the moon", "a river", "music", "a train", "winter"]


def chatml(user: str) -> str:
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def prompt(i: int) -> str:
    return chatml(f"Write a long essay about {TOPICS[i % len(TOPICS)]}.")


# --------------------------------------------------------------------------- bare loop
class BareLoop:
    """A minimal llama-cpp-python low-level decode loop: batch of one token, greedy chain."""

    def __init__(self, args: argparse.Namespace, model_path: str, amx_guard: bool) -> None:
        L = llama_cpp
        self.tokens = args.tokens
        mparams = L.llama_model_default_params()
        mparams.use_extra_bufts = not amx_guard  # as the engine loaded it (AMX crashes here)
        self.model = L.llama_model_load_from_file(model_path.encode(), mparams)
        cparams = L.llama_context_default_params()
        cparams.n_ctx = args.ctx
        cparams.n_seq_max = 1
        cparams.kv_unified = False
        cparams.n_batch = cparams.n_ubatch = args.batch
        cparams.n_threads = cparams.n_threads_batch = args.threads
        cparams.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_AUTO
        cparams.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cparams)
        vocab = L.llama_model_get_vocab(self.model)
        text = prompt(0).encode()
        self.prompt = (L.llama_token * (len(text) + 8))()
        self.n_prompt = L.llama_tokenize(
            vocab, text, len(text), self.prompt, len(text) + 8, True, True
        )
        self.chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_greedy())
        self.batch = L.llama_batch_init(max(self.n_prompt, 1), 0, 1)

    def run(self) -> float:
        """Decode tokens/s from the first sampled token to the last."""
        L, batch, ctx = llama_cpp, self.batch, self.ctx
        L.llama_memory_seq_rm(L.llama_get_memory(ctx), 0, 0, -1)
        for i in range(self.n_prompt):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = self.prompt[i], i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, i == self.n_prompt - 1
        batch.n_tokens = self.n_prompt
        assert L.llama_decode(ctx, batch) == 0
        pos, t_first = self.n_prompt, 0.0
        for k in range(self.tokens):
            token = L.llama_sampler_sample(self.chain, ctx, -1)
            if k == 0:
                t_first = time.perf_counter()
            if k == self.tokens - 1:
                break
            batch.token[0], batch.pos[0], batch.n_seq_id[0] = token, pos, 1
            batch.seq_id[0][0], batch.logits[0] = 0, True
            batch.n_tokens = 1
            assert L.llama_decode(ctx, batch) == 0
            pos += 1
        return float((self.tokens - 1) / (time.perf_counter() - t_first))

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_sampler_free(self.chain)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)


# --------------------------------------------------------------------------- engine runs
def engine_config(args: argparse.Namespace, model_path: str, n_slots: int) -> EngineConfig:
    return EngineConfig(
        model_path=model_path,
        n_slots=n_slots,
        n_ctx_slot=args.ctx,
        n_batch=args.batch,
        n_threads=args.threads,
        n_gpu_layers=0,
        prompt_cache=False,
    )


def params(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=args.tokens, ignore_eos=True)


async def collect(engine: LlamaEngine, rid: str, text: str, sp: SamplingParams) -> list[TokenEvent]:
    return [event async for event in engine.submit(GenerationRequest(rid, text, sp))]


async def single_stream(args: argparse.Namespace, model_path: str) -> tuple[float, float]:
    """Best decode tokens/s of (bare loop, one-slot engine), runs interleaved against noise."""
    engine = LlamaEngine(engine_config(args, model_path, 1))
    await engine.start()
    bare = BareLoop(args, model_path, engine.model_info().offload.amx_guard)
    try:
        bare_rates, engine_rates = [], []
        for r in range(args.repeat):
            bare_rates.append(bare.run())
            final = (await collect(engine, f"s{r}", prompt(0), params(args)))[-1]
            assert final.timings is not None
            engine_rates.append(final.timings.decode_tokens_per_s)
        return max(bare_rates), max(engine_rates)
    finally:
        bare.close()
        await engine.stop()


class _TimedBackend:
    """Delegates to the real backend, adding up the time spent inside llama.cpp calls."""

    def __init__(self, inner: ModelBackend) -> None:
        self.inner = inner
        self.native_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def decode(self, batch: Sequence[BatchToken]) -> None:
        t = time.perf_counter()
        self.inner.decode(batch)
        self.native_s += time.perf_counter() - t

    def new_sampler(self, params: SamplingParams, seed: int) -> Any:
        sampler, timed = self.inner.new_sampler(params, seed), self

        class Timed:
            def sample(self, index: int) -> int:
                t = time.perf_counter()
                token = sampler.sample(index)
                timed.native_s += time.perf_counter() - t
                return token

            def accept(self, token: int) -> None:
                sampler.accept(token)

            def close(self) -> None:
                sampler.close()

        return Timed()


async def python_overhead(args: argparse.Namespace, model_path: str) -> tuple[float, float]:
    """(microseconds, share) of engine-thread time per token outside llama.cpp, one stream."""
    timed: list[_TimedBackend] = []

    def factory(config: EngineConfig) -> ModelBackend:
        timed.append(_TimedBackend(load_backend(config)))
        return cast(ModelBackend, timed[0])

    engine = LlamaEngine(engine_config(args, model_path, 1), backend_factory=factory)
    await engine.start()
    try:
        await collect(engine, "warm", prompt(0), params(args))
        timed[0].native_s = 0.0
        start = time.perf_counter()
        steps0 = engine.steps
        await collect(engine, "timed", prompt(1), params(args))
        wall = time.perf_counter() - start
        steps = engine.steps - steps0
    finally:
        await engine.stop()
    other = wall - timed[0].native_s
    return other / steps * 1e6, other / wall


async def aggregate_tps(engine: LlamaEngine, args: argparse.Namespace, n: int, tag: str) -> float:
    """Total tokens / wall time for n streams started together (prefill included)."""
    start = time.perf_counter()
    results = await asyncio.gather(
        *(collect(engine, f"{tag}-{i}", prompt(i), params(args)) for i in range(n))
    )
    wall = time.perf_counter() - start
    tokens = sum(r[-1].usage.completion_tokens for r in results if r[-1].usage is not None)
    return tokens / wall


async def ttft_under_load(engine: LlamaEngine, args: argparse.Namespace) -> float:
    """Seconds from submit to the first token of a new request while 7 streams decode."""
    load_params = SamplingParams(temperature=0.0, max_tokens=args.tokens * 4, ignore_eos=True)
    decoding = asyncio.Event()

    async def load(i: int) -> None:
        request = GenerationRequest(f"load{i}", prompt(i), load_params)
        async for event in engine.submit(request):
            if event.token_id is not None:
                decoding.set()

    tasks = [asyncio.create_task(load(i)) for i in range(7)]
    await decoding.wait()
    await asyncio.sleep(0.05)  # all 7 are past their prefill by now
    start = time.perf_counter()
    ttft = 0.0
    async for event in engine.submit(GenerationRequest("probe", prompt(3), params(args))):
        if event.token_id is not None and not ttft:
            ttft = time.perf_counter() - start
            engine.abort("probe")
    for i in range(7):
        engine.abort(f"load{i}")
    await asyncio.gather(*tasks)
    return ttft


async def abort_latency(engine: LlamaEngine, args: argparse.Namespace) -> tuple[int, float]:
    """(steps, seconds) from abort() to the CANCELLED event, with 4 streams decoding."""
    long = SamplingParams(temperature=0.0, max_tokens=args.tokens * 4, ignore_eos=True)
    others = [asyncio.create_task(collect(engine, f"bg{i}", prompt(i), long)) for i in range(3)]
    steps, seconds, step0, t0 = 0, 0.0, 0, 0.0
    busy_after = -1
    n = 0
    async for event in engine.submit(GenerationRequest("victim", prompt(5), long)):
        n += 1
        if n == 5:
            step0, t0 = engine.steps, time.perf_counter()
            engine.abort("victim")
        if event.is_final:
            seconds = time.perf_counter() - t0
            steps = engine.steps - step0
            busy_after = engine.stats().slots_busy
    assert busy_after == 3, "the aborted slot should be free when CANCELLED arrives"
    for i in range(3):
        engine.abort(f"bg{i}")
    await asyncio.gather(*others)
    return steps, seconds


async def run(args: argparse.Namespace, model_path: str) -> None:
    print(
        f"model {Path(model_path).name}, threads {args.threads}, ctx/slot {args.ctx}, "
        f"batch {args.batch}, {args.tokens} tokens per request, best of {args.repeat}"
    )
    bare, single = await single_stream(args, model_path)
    overhead_us, share = await python_overhead(args, model_path)
    print(
        f"engine overhead outside llama.cpp (engine thread + asyncio delivery, wall): "
        f"{overhead_us:.0f} us per token ({share * 100:.1f}% of the time)"
    )
    print(
        f"single stream: bare loop {bare:7.1f} tok/s | engine {single:7.1f} tok/s "
        f"| ratio {single / bare:.3f} (target >= 0.95)"
    )
    engine = LlamaEngine(engine_config(args, model_path, 8))
    await engine.start()
    try:
        await aggregate_tps(engine, args, 1, "warmup")
        agg: dict[int, float] = {}
        for n in args.streams:
            agg[n] = max(
                [await aggregate_tps(engine, args, n, f"agg{n}r{r}") for r in range(args.repeat)]
            )
        base = agg.get(1) or single
        for n, tps in agg.items():
            print(f"aggregate {n} stream(s): {tps:7.1f} tok/s ({tps / base:.2f}x one stream)")
        ttfts = [await ttft_under_load(engine, args) for _ in range(args.repeat)]
        print(
            f"time to first token with 7 streams decoding: {statistics.median(ttfts) * 1000:.0f} ms"
        )
        results = [await abort_latency(engine, args) for _ in range(args.repeat)]
        steps = max(r[0] for r in results)
        ms = statistics.median(r[1] for r in results) * 1000
        print(
            f"abort -> CANCELLED event with the slot free: {ms:.1f} ms (median); {steps} "
            "scheduler step(s) began meanwhile (the abort is applied at the start of the "
            "first; a second one may already run when the event arrives)"
        )
    finally:
        await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="GGUF path (default: the built-in default model)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per request")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx", type=int, default=1024, help="context tokens per slot")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--streams", default="1,2,4,8", help="comma-separated stream counts")
    args = parser.parse_args()
    args.streams = [int(s) for s in args.streams.split(",")]
    model_path = args.model or str(resolve_model(DEFAULT_MODEL, DEFAULT_MODELS_DIR))
    asyncio.run(run(args, model_path))


if __name__ == "__main__":
    main()
