"""The real engine on the default model: batch invariance, chunked prefill, seeds, prefix reuse.

Prompts use the model's ChatML format. Requests stay short (32-64 tokens) so the suite is
quick on a 2-core machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from app.engine.service import LlamaEngine
from app.engine.types import (
    EngineConfig,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenEvent,
)

SYSTEM = "You are a helpful assistant."
GREEDY = SamplingParams(temperature=0.0, max_tokens=32)


def chatml(user: str, *, system: str = SYSTEM, history: tuple[tuple[str, str], ...] = ()) -> str:
    """A ChatML prompt ending with the assistant's turn opened."""
    text = f"<|im_start|>system\n{system}<|im_end|>\n"
    for past_user, past_reply in history:
        text += f"<|im_start|>user\n{past_user}<|im_end|>\n"
        text += f"<|im_start|>assistant\n{past_reply}<|im_end|>\n"
    return text + f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


@asynccontextmanager
async def running_engine(model_path: Path, **config: object) -> AsyncIterator[LlamaEngine]:
    """A started LlamaEngine on the real model (stopped on exit)."""
    settings: dict[str, object] = {"n_slots": 4, "n_ctx_slot": 512, "n_batch": 256}
    settings.update(config)
    engine = LlamaEngine(EngineConfig(model_path=str(model_path), **settings))  # type: ignore[arg-type]
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def generate(
    engine: LlamaEngine, rid: str, prompt: str, params: SamplingParams = GREEDY, **kw: bool
) -> list[TokenEvent]:
    """Submit and collect every event of one request."""
    request = GenerationRequest(rid, prompt, params, **kw)
    return [event async for event in engine.submit(request)]


def text_of(events: list[TokenEvent]) -> str:
    return "".join(e.text for e in events)


QUESTIONS = (
    "What is 2+2?",
    "Name a color.",
    "Write a haiku about rain.",
    "What is the capital of Italy?",
    "Tell me a joke.",
    "What is Python?",
    "Say hello.",
    "Count to five.",
)


async def test_eight_identical_greedy_requests_at_once_equal_one_alone(model_path: Path) -> None:
    async with running_engine(model_path, n_slots=8) as engine:
        prompt = chatml("Tell me about the moon.")
        alone = await generate(engine, "alone", prompt)
        assert alone[-1].finish_reason in (FinishReason.STOP, FinishReason.LENGTH)
        assert len(text_of(alone)) > 20
        together = await asyncio.gather(*(generate(engine, f"r{i}", prompt) for i in range(8)))
        assert [text_of(events) for events in together] == [text_of(alone)] * 8
        assert engine.stats().slots_busy == 0


async def test_eight_different_concurrent_requests_each_equal_the_request_alone(
    model_path: Path,
) -> None:
    async with running_engine(model_path, n_slots=8) as engine:
        alone = [
            text_of(await generate(engine, f"a{i}", chatml(q))) for i, q in enumerate(QUESTIONS)
        ]
        assert len(set(alone)) == len(alone)
        together = await asyncio.gather(
            *(generate(engine, f"c{i}", chatml(q)) for i, q in enumerate(QUESTIONS))
        )
        assert [text_of(events) for events in together] == alone


async def test_a_long_prompt_is_prefilled_in_chunks_while_other_streams_decode(
    model_path: Path,
) -> None:
    async with running_engine(model_path, n_slots=2, n_batch=32) as engine:
        short = chatml("Count from one to fifty in words.")
        alone = text_of(
            await generate(engine, "alone", short, SamplingParams(temperature=0.0, max_tokens=48))
        )
        long_prompt = chatml(
            "Summarize this: " + "The quick brown fox jumps over the lazy dog. " * 30
        )
        n_long = engine.count_tokens(long_prompt)
        assert n_long > 10 * 32  # at least 10 steps of prefill
        short_tokens = 0
        short_started = asyncio.Event()
        long_first_at: int | None = None

        async def run_short() -> list[TokenEvent]:
            nonlocal short_tokens
            events = []
            async for event in engine.submit(
                GenerationRequest("short", short, SamplingParams(temperature=0.0, max_tokens=48))
            ):
                short_tokens += event.token_id is not None
                short_started.set()
                events.append(event)
            return events

        async def run_long() -> None:
            nonlocal long_first_at
            request = GenerationRequest(
                "long", long_prompt, SamplingParams(temperature=0.0, max_tokens=4)
            )
            async for event in engine.submit(request):
                if long_first_at is None and event.token_id is not None:
                    long_first_at = short_tokens

        short_task = asyncio.create_task(run_short())
        await short_started.wait()
        await run_long()
        short_events = await short_task
        # each prefill step (31 prompt tokens + 1 decode token) gave the short stream a token
        assert long_first_at is not None
        assert long_first_at >= 1 + n_long // 32
        assert text_of(short_events) == alone


async def test_same_seed_and_temperature_give_the_same_text(model_path: Path) -> None:
    async with running_engine(model_path) as engine:
        prompt = chatml("Write a short poem about the sea.")

        def params(seed: int) -> SamplingParams:
            return SamplingParams(
                temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed, max_tokens=24
            )

        first = text_of(await generate(engine, "s1", prompt, params(1234)))
        second = text_of(await generate(engine, "s2", prompt, params(1234)))
        other = text_of(await generate(engine, "s3", prompt, params(99)))
        assert first == second
        assert other != first  # the seed does matter


async def test_second_chat_turn_reuses_the_cached_prefix_with_identical_output(
    model_path: Path,
) -> None:
    async with running_engine(model_path, n_slots=2) as engine:
        question = "What is the capital of France?"
        turn1 = await generate(engine, "t1", chatml(question))
        reply = text_of(turn1)
        assert turn1[-1].usage is not None
        assert turn1[-1].usage.cached_prompt_tokens == 0
        turn2_prompt = chatml("And of Germany?", history=((question, reply),))
        cached = await generate(engine, "t2", turn2_prompt)
        fresh = await generate(engine, "t2-nocache", turn2_prompt, use_cache=False)
        usage = cached[-1].usage
        assert usage is not None
        assert usage.cached_prompt_tokens >= engine.count_tokens(chatml(question)) - 5
        assert fresh[-1].usage is not None
        assert fresh[-1].usage.cached_prompt_tokens == 0
        assert text_of(cached) == text_of(fresh)
        assert engine.stats().cached_prompt_tokens_total == usage.cached_prompt_tokens
