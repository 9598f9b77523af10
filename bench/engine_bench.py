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
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import llama_cpp  # noqa: TID251 - the bare baseline loop talks to llama.cpp directly

from app.engine.backend import BatchToken, ModelBackend
from app.engine.llama import _lib, load_backend
from app.engine.llama.cpu import decide_amx_guard, read_cpu_facts
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
    """A minimal llama-cpp-python low-level decode loop: greedy, ``n_seq`` sequences batched.

    With ``n_seq=1`` it is the single-stream baseline; with ``n_seq=8`` it is the ceiling of
    what llama.cpp itself gives on this machine for 8 batched sequences (no scheduler).
    """

    def __init__(
        self, args: argparse.Namespace, model_path: str, amx_guard: bool, n_seq: int = 1
    ) -> None:
        L = llama_cpp
        self.tokens = args.tokens
        self.n_seq = n_seq
        mparams = L.llama_model_default_params()
        mparams.use_extra_bufts = not amx_guard  # as the engine loaded it (AMX crashes here)
        self.model = L.llama_model_load_from_file(model_path.encode(), mparams)
        cparams = L.llama_context_default_params()
        cparams.n_ctx = args.ctx * n_seq
        cparams.n_seq_max = n_seq
        cparams.kv_unified = False
        cparams.n_batch = cparams.n_ubatch = args.batch
        cparams.n_threads = cparams.n_threads_batch = args.threads
        cparams.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_AUTO
        cparams.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cparams)
        vocab = L.llama_model_get_vocab(self.model)
        self.prompts: list[list[int]] = []
        for i in range(n_seq):
            text = prompt(i).encode()
            buf = (L.llama_token * (len(text) + 8))()
            n = L.llama_tokenize(vocab, text, len(text), buf, len(text) + 8, True, True)
            self.prompts.append(list(buf[:n]))
        self.chains = []
        for _ in range(n_seq):
            chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            self.chains.append(chain)
        self.batch = L.llama_batch_init(max(args.batch, n_seq), 0, 1)

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        batch = self.batch
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, logits
        batch.n_tokens = len(items)
        assert llama_cpp.llama_decode(self.ctx, batch) == 0

    def run(self) -> float:
        """Decode tokens/s (all sequences) from the first sampled token to the last."""
        L, ctx = llama_cpp, self.ctx
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        last = []
        for seq, tokens in enumerate(self.prompts):
            n = len(tokens)
            self._decode([(t, p, seq, p == n - 1) for p, t in enumerate(tokens)])
            last.append((L.llama_sampler_sample(self.chains[seq], ctx, -1), n))
        t_first = time.perf_counter()
        for _ in range(self.tokens - 1):
            self._decode([(tok, pos, seq, True) for seq, (tok, pos) in enumerate(last)])
            last = [
                (L.llama_sampler_sample(self.chains[seq], ctx, seq), pos + 1)
                for seq, (_, pos) in enumerate(last)
            ]
        return float(self.n_seq * (self.tokens - 1) / (time.perf_counter() - t_first))

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        for chain in self.chains:
            llama_cpp.llama_sampler_free(chain)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)


def detect_amx_guard() -> bool:
    """Whether the engine's loader would disable the AMX extra buffer type on this host."""
    return decide_amx_guard(read_cpu_facts(), _lib.build_has_amx(), None).guard


def bare_batched(args: argparse.Namespace, model_path: str, n: int) -> float:
    """Decode tokens/s of the bare loop with ``n`` sequences batched (best of a few runs)."""
    loop = BareLoop(args, model_path, amx_guard=detect_amx_guard(), n_seq=n)
    try:
        return max(loop.run() for _ in range(args.repeat))
    finally:
        loop.close()


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


def bare_in_subprocess(args: argparse.Namespace, model_path: str, n_seq: int) -> float:
    """The bare loop's decode tokens/s, measured in a fresh process.

    A separate process, as a real server has: two llama contexts in one process (and their
    thread pools) measurably slow each other down on 2 cores.
    """
    command = [
        sys.executable, __file__, "--bare-only", str(n_seq), "--model", model_path,
        "--tokens", str(args.tokens), "--threads", str(args.threads), "--ctx", str(args.ctx),
        "--batch", str(args.batch), "--repeat", "1",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return float(result.stdout.split()[-1])


async def single_stream(args: argparse.Namespace, model_path: str) -> tuple[float, float]:
    """Best decode tokens/s of (bare loop, one-slot engine), runs interleaved against noise."""
    engine = LlamaEngine(engine_config(args, model_path, 1))
    await engine.start()
    try:
        bare_rates, engine_rates = [], []
        for r in range(args.repeat):
            bare_rates.append(bare_in_subprocess(args, model_path, 1))
            final = (await collect(engine, f"s{r}", prompt(0), params(args)))[-1]
            assert final.timings is not None
            engine_rates.append(final.timings.decode_tokens_per_s)
        return max(bare_rates), max(engine_rates)
    finally:
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

            def __getattr__(self, name: str) -> Any:  # last_logprob and what else comes
                return getattr(sampler, name)

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


async def timed(engine: LlamaEngine, rid: str, text: str, sp: SamplingParams) -> list[float]:
    """Arrival time of each generated token of one request."""
    request = GenerationRequest(rid, text, sp)
    return [time.perf_counter() async for e in engine.submit(request) if e.token_id is not None]


async def aggregate_tps(
    engine: LlamaEngine, args: argparse.Namespace, n: int, tag: str
) -> tuple[float, float]:
    """n streams started together: (tokens / wall time, prefill included; decode-only rate).

    The decode-only rate is measured the way the bare loop measures it: only while all n
    streams decode, from the moment every stream has its first token to the first end.
    """
    start = time.perf_counter()
    arrivals = await asyncio.gather(
        *(timed(engine, f"{tag}-{i}", prompt(i), params(args)) for i in range(n))
    )
    end = time.perf_counter()
    # The window in which every stream decodes: from the last first token to the first end
    # (streams admitted a step apart also end a step apart; the tail is not n-wide).
    all_first = max(a[0] for a in arrivals)
    first_end = min(a[-1] for a in arrivals)
    decode_tokens = sum(1 for a in arrivals for t in a[1:] if all_first < t <= first_end)
    return sum(len(a) for a in arrivals) / (end - start), decode_tokens / (first_end - all_first)


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
        agg: dict[int, tuple[float, float]] = {}
        for n in args.streams:
            runs = [await aggregate_tps(engine, args, n, f"agg{n}r{r}") for r in range(args.repeat)]
            agg[n] = (max(r[0] for r in runs), max(r[1] for r in runs))
        base = agg[1][0] if 1 in agg else single
        for n, (tps, decode) in agg.items():
            print(
                f"aggregate {n} stream(s): {tps:7.1f} tok/s with prefill ({tps / base:.2f}x one "
                f"stream); decode only {decode:7.1f} tok/s"
            )
        ceiling = max(bare_in_subprocess(args, model_path, 8) for _ in range(args.repeat))
        print(
            f"bare llama.cpp loop, 8 sequences batched (decode only, no scheduler): "
            f"{ceiling:7.1f} tok/s ({ceiling / bare:.2f}x the bare single stream)"
        )
        if 8 in agg:
            print(
                f"engine 8 streams, decode only, vs that bare loop: {agg[8][1] / ceiling:.3f} "
                "(target >= 0.95; the with-prefill figure also pays 8 prompts' prefill and "
                "the first tokens' wait, which the bare loop leaves out)"
            )
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
    parser.add_argument("--bare-only", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument(
        "--asyncio-loop", action="store_true", help="asyncio's default loop instead of uvloop"
    )
    args = parser.parse_args()
    if args.bare_only:  # child process of bare_in_subprocess: print the rate and exit
        print(bare_batched(args, args.model, args.bare_only))
        return
    args.streams = [int(s) for s in args.streams.split(",")]
    model_path = args.model or str(resolve_model(DEFAULT_MODEL, DEFAULT_MODELS_DIR))
    # The event loop the server runs on (uvicorn picks uvloop): the engine thread wakes the
    # loop once per step, and asyncio's default loop makes each wake-up dearer.
    if not args.asyncio_loop:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(run(args, model_path))


if __name__ == "__main__":
    main()
