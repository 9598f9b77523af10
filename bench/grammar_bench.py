"""Grammar-constrained decode speed vs unconstrained, and grammar compile time.

Prints, on the default model:
  1. compile time of each schema of SCHEMAS (a 10-field schema as it was before structured
     output II, the same with ranges/formats/multipleOf, a 1,000- and a 5,000-value enum):
     the schema check (serving; the 5,000-value enum is over its limit, so skipped), then
     cold compiles (no cache) by the two engines behind ``GrammarCache``: llguidance
     (schema -> Lark -> matcher, with its first-token check) and the fallback converter
     (schema -> GBNF -> llama.cpp's parse, with its first-token check), and a cached copy;
  2. aggregate decode tokens/s at 1 and 8 concurrent streams, unconstrained vs constrained
     by the --schema schema (target: constrained >= 0.85x unconstrained). Same prompt, temperature
     0.8, same seeds; unconstrained requests run with ignore_eos so both generate about
     --tokens tokens (a constrained reply ends when its JSON closes; rates are per token);
  3. the process's peak RSS after each part.

    python bench/grammar_bench.py                        # full run
    python bench/grammar_bench.py --tokens 32 --streams 1 --repeat 1   # quick smoke run
    python bench/grammar_bench.py --schema ten-field                   # the older schema
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from typing import Any

from app.engine.llama import _lib, load_backend
from app.engine.llama.grammar import GrammarCache, _allows_a_first_token, to_gbnf
from app.engine.llama.guidance import GuidanceConstraint, GuidanceVocab
from app.engine.llama.guidance_schema import to_lark
from app.engine.service import LlamaEngine
from app.engine.types import EngineConfig, GenerationRequest, Grammar, JsonRule, SamplingParams
from app.errors import InvalidRequest
from app.models.registry import resolve_model
from app.serving.chat_template import render_chat
from app.serving.structured import json_grammar
from app.settings import DEFAULT_MODEL, DEFAULT_MODELS_DIR

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "email": {"type": "string", "maxLength": 60},
        "city": {"type": "string", "maxLength": 40},
        "country": {"enum": ["France", "Japan", "Peru", "Kenya", "Canada"]},
        "active": {"type": "boolean"},
        "score": {"type": "number"},
        "joined": {"type": "string", "format": "date"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 5},
        "manager": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "id": {"type": "integer"}},
            "required": ["name", "id"],
        },
    },
    "required": ["name", "age", "email", "city", "country", "active", "score", "joined", "tags"],
}
RANGES: dict[str, Any] = {
    **SCHEMA,
    "properties": {
        **SCHEMA["properties"],
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "email": {"type": "string", "format": "email"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "id": {"type": "integer", "multipleOf": 5},
        "joined": {"type": "string", "format": "date-time"},
    },
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "ten-field": SCHEMA,
    "ten-field-ranges": RANGES,
    "enum-1000": {"enum": [f"item-{i:04d}" for i in range(1000)]},
    "enum-5000": {"enum": [f"item-{i:04d}" for i in range(5000)]},
}
PROMPT = [{"role": "user", "content": "Invent a customer record as JSON with ten fields."}]


def compile_times(config: EngineConfig, repeat: int) -> None:
    """Schema check, then each engine's cold compile of each of SCHEMAS, and a cached copy."""
    backend = load_backend(config)
    try:
        vocab = backend._vocab  # the bench measures the engines behind the cache directly
        t0 = time.perf_counter()
        guidance = GuidanceVocab(vocab)
        guidance.tokenizer  # noqa: B018 - built once per vocabulary (on the first schema)
        print(f"llguidance tokenizer for the vocabulary: {1e3 * (time.perf_counter() - t0):.0f} ms")
        for name, schema in SCHEMAS.items():
            print(f"{name}: " + _compile_time(vocab, guidance, schema, repeat))
    finally:
        backend.close()
    print(f"peak RSS after compiles: {peak_rss_mib():.0f} MiB")


def _median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def _compile_time(vocab: int, guidance: GuidanceVocab, schema: dict[str, object], n: int) -> str:
    try:
        t0 = time.perf_counter()
        grammar = json_grammar(schema, param="response_format")
        check = f"schema check {1e3 * (time.perf_counter() - t0):.2f}"
    except InvalidRequest:  # over serving's limits: compiled directly, to compare engines
        grammar = Grammar("root ::= answer", (JsonRule("answer", json.dumps(schema)),))
        check = "schema check: over the limits"
    guided, native, cached = [], [], []
    for _ in range(n * 3):
        t0 = time.perf_counter()
        lark = to_lark(grammar)
        assert lark is not None
        guidance.compile(lark)
        t1 = time.perf_counter()
        handle = _lib.sampler_grammar(vocab, to_gbnf(grammar))
        assert handle is not None
        assert _allows_a_first_token(handle, _lib.vocab_n_tokens(vocab))
        t2 = time.perf_counter()
        _lib.sampler_free(handle)
        guided.append(t1 - t0)
        native.append(t2 - t1)
    cache = GrammarCache(vocab)
    cache.check(grammar)
    for _ in range(n * 3):
        t0 = time.perf_counter()
        constraint = cache.new_constraint(grammar)
        cached.append(time.perf_counter() - t0)
        assert isinstance(constraint, GuidanceConstraint)
    cache.close()
    g, c = _median_ms(guided), _median_ms(native)
    return (
        f"{check}; compile (median ms): llguidance {g:.2f}, GBNF converter + llama.cpp "
        f"{c:.2f} ({c / g:.1f}x); cached copy {_median_ms(cached):.3f}"
    )


def peak_rss_mib() -> float:
    """This process's peak resident set (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def decode_rate(
    engine: LlamaEngine, prompt: str, streams: int, tokens: int, grammar: Grammar | None
) -> float:
    """Aggregate generated tokens/s of ``streams`` concurrent requests."""

    async def one(i: int) -> int:
        params = SamplingParams(
            temperature=0.8, seed=i, max_tokens=tokens, grammar=grammar, ignore_eos=not grammar
        )
        n = 0
        request = GenerationRequest(f"g{time.perf_counter_ns()}-{i}", prompt, params)
        async for event in engine.submit(request):
            if event.usage is not None:
                n = event.usage.completion_tokens
        return n

    t0 = time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(streams)))
    return sum(counts) / (time.perf_counter() - t0)


async def speeds(config: EngineConfig, args: argparse.Namespace) -> None:
    engine = LlamaEngine(config)
    await engine.start()
    try:
        prompt = render_chat(engine.model_info().chat_template, PROMPT)
        grammar = json_grammar(SCHEMAS[args.schema], param="response_format")
        for streams in args.streams:
            free, constrained = [], []
            for _ in range(args.repeat):  # interleaved, so load changes hit both alike
                free.append(await decode_rate(engine, prompt, streams, args.tokens, None))
                constrained.append(await decode_rate(engine, prompt, streams, args.tokens, grammar))
            f, c = max(free), max(constrained)
            print(
                f"{args.schema}, {streams} stream(s): unconstrained {f:.1f} tok/s, "
                f"grammar {c:.1f} tok/s ({c / f:.2f}x)"
            )
    finally:
        await engine.stop()
    print(f"peak RSS after decoding: {peak_rss_mib():.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--schema", choices=sorted(SCHEMAS), default="ten-field-ranges")
    args = parser.parse_args()
    model = str(resolve_model(DEFAULT_MODEL, DEFAULT_MODELS_DIR))
    config = EngineConfig(
        model_path=model, n_slots=max(args.streams), n_ctx_slot=1024, n_threads=args.threads
    )
    with open("/proc/loadavg") as load:
        print(f"load average: {load.read().strip()}")
    compile_times(config, args.repeat)
    asyncio.run(speeds(config, args))


if __name__ == "__main__":
    main()
