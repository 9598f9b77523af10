"""Grammar-constrained decode speed vs unconstrained, and grammar compile time.

Prints, on the default model:
  1. compile time of each schema of SCHEMAS (a 10-field schema as it was before structured
     output II, the same with ranges/formats/multipleOf, a 1,000-value enum): the schema
     check (serving), the conversion to GBNF and llama.cpp's parse (cold, no cache), and a
     cached lookup;
  2. aggregate decode tokens/s at 1 and 8 concurrent streams, unconstrained vs constrained
     by the --schema schema (target: constrained >= 0.85x unconstrained). Same prompt, temperature
     0.8, same seeds; unconstrained requests run with ignore_eos so both generate about
     --tokens tokens (a constrained reply ends when its JSON closes; rates are per token).

    python bench/grammar_bench.py                        # full run
    python bench/grammar_bench.py --tokens 32 --streams 1 --repeat 1   # quick smoke run
    python bench/grammar_bench.py --schema ten-field-ranges            # the new keywords
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from app.engine.llama import _lib, load_backend
from app.engine.llama.grammar import GrammarCache, to_gbnf
from app.engine.service import LlamaEngine
from app.engine.types import EngineConfig, GenerationRequest, Grammar, SamplingParams
from app.models.registry import resolve_model
from app.serving.chat_template import render_chat
from app.serving.structured import json_grammar
from app.settings import DEFAULT_MODEL, DEFAULT_MODELS_DIR

SCHEMA = {
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
RANGES = {
    **SCHEMA,
    "properties": {
        **SCHEMA["properties"],  # type: ignore[dict-item]
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "email": {"type": "string", "format": "email"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "id": {"type": "integer", "multipleOf": 5},
        "joined": {"type": "string", "format": "date-time"},
    },
}
SCHEMAS: dict[str, dict[str, object]] = {
    "ten-field": SCHEMA,
    "ten-field-ranges": RANGES,
    "enum-1000": {"enum": [f"item-{i:04d}" for i in range(1000)]},
}
PROMPT = [{"role": "user", "content": "Invent a customer record as JSON with ten fields."}]


def compile_times(config: EngineConfig, repeat: int) -> None:
    """Schema check, GBNF conversion and native parse of each of SCHEMAS, cold and cached."""
    backend = load_backend(config)
    try:
        vocab = backend._vocab  # the bench measures the backend's own cache directly
        for name, schema in SCHEMAS.items():
            print(f"{name}: " + _compile_time(vocab, schema, repeat))
    finally:
        backend.close()


def _compile_time(vocab: int, schema: dict[str, object], repeat: int) -> str:
    check, convert, parse, cached = [], [], [], []
    for _ in range(repeat * 3):
        t0 = time.perf_counter()
        grammar = json_grammar(schema, param="response_format")
        t1 = time.perf_counter()
        to_gbnf(grammar)
        t2 = time.perf_counter()
        cache = GrammarCache(vocab)
        cache.check(grammar)  # conversion + llama_sampler_init_grammar + first-token check
        t3 = time.perf_counter()
        _lib.sampler_free(cache.new_sampler(grammar))
        t4 = time.perf_counter()
        cache.close()
        check.append(t1 - t0)
        convert.append(t2 - t1)
        parse.append(t3 - t2 - (t2 - t1))
        cached.append(t4 - t3)
    check_ms, convert_ms, parse_ms, cached_ms = (
        1e3 * statistics.median(v) for v in (check, convert, parse, cached)
    )
    return (
        f"compile (median ms): schema check {check_ms:.2f}, JSON Schema -> GBNF "
        f"{convert_ms:.2f}, llama.cpp parse {parse_ms:.2f}, cached clone {cached_ms:.3f}"
    )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--schema", choices=sorted(SCHEMAS), default="ten-field")
    args = parser.parse_args()
    model = str(resolve_model(DEFAULT_MODEL, DEFAULT_MODELS_DIR))
    config = EngineConfig(
        model_path=model, n_slots=max(args.streams), n_ctx_slot=1024, n_threads=args.threads
    )
    compile_times(config, args.repeat)
    asyncio.run(speeds(config, args))


if __name__ == "__main__":
    main()
