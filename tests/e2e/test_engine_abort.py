"""Abort on the real model: queued, prefilling and decoding; the slot is free at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.engine.types import FinishReason, GenerationRequest, SamplingParams, TokenEvent
from tests.e2e.test_engine_batching import chatml, generate, running_engine, text_of

PARAMS = SamplingParams(temperature=0.0, max_tokens=32)
LONG_USER = "Summarize this: " + "The quick brown fox jumps over the lazy dog. " * 30


async def test_abort_while_queued_cancels_it_and_the_running_request_completes(
    model_path: Path,
) -> None:
    async with running_engine(model_path, n_slots=1) as engine:
        prompt = chatml("Name three fruits.")
        alone = text_of(await generate(engine, "alone", prompt, PARAMS))
        running = asyncio.create_task(generate(engine, "running", prompt, PARAMS))
        queued = engine.submit(GenerationRequest("queued", chatml("Hi"), PARAMS))
        engine.abort("queued")
        events = [event async for event in queued]
        assert len(events) == 1
        final = events[0]
        assert final.finish_reason is FinishReason.CANCELLED
        assert final.usage is not None
        assert final.usage.completion_tokens == 0
        assert engine.stats().queue_length == 0
        done = await running
        assert done[-1].finish_reason is not FinishReason.CANCELLED
        assert text_of(done) == alone


async def test_abort_while_prefilling_frees_the_slot_and_others_go_on(model_path: Path) -> None:
    async with running_engine(model_path, n_slots=2, n_batch=32, n_ctx_slot=1024) as engine:
        short = chatml("Count from one to twenty in words.")
        alone = text_of(await generate(engine, "alone", short, PARAMS))
        long_prompt = chatml(LONG_USER * 2)
        assert engine.count_tokens(long_prompt) > 20 * 31  # more than 20 prefill steps
        other: list[TokenEvent] = []
        stream = None
        async for event in engine.submit(GenerationRequest("other", short, PARAMS)):
            other.append(event)
            if len(other) == 1:
                stream = engine.submit(GenerationRequest("long", long_prompt, PARAMS))
            elif len(other) == 4:  # "long" has had a few prefill steps (one per token here)
                assert engine.stats().slots_busy == 2  # admitted, so not merely queued
                engine.abort("long")
                assert stream is not None
                events = [e async for e in stream]
                final = events[-1]
                assert final.finish_reason is FinishReason.CANCELLED
                assert final.usage is not None
                assert final.usage.completion_tokens == 0  # it was still prefilling
                stats = engine.stats()
                assert stats.slots_busy == 1  # only "other"
                assert stats.requests_active == 1
        assert text_of(other) == alone


async def test_abort_while_decoding_frees_the_slot_at_once(model_path: Path) -> None:
    async with running_engine(model_path, n_slots=2) as engine:
        keep_prompt = chatml("Describe a sunny day.")
        alone = text_of(await generate(engine, "alone", keep_prompt, PARAMS))
        keep = asyncio.create_task(generate(engine, "keep", keep_prompt, PARAMS))
        victim: list[TokenEvent] = []
        request = GenerationRequest("victim", chatml("Describe a rainy day."), PARAMS)
        async for event in engine.submit(request):
            victim.append(event)
            if len(victim) == 3:
                engine.abort("victim")
            if event.is_final:
                # the CANCELLED event is sent after the slot and its KV cells were freed
                stats = engine.stats()
                assert stats.slots_busy == 1
                assert stats.requests_active == 1
        final = victim[-1]
        assert final.finish_reason is FinishReason.CANCELLED
        assert final.usage is not None
        # cut short: at least the 3 tokens seen, fewer than max_tokens (how many more the
        # engine made before the abort landed depends on how busy the machine is)
        assert 3 <= final.usage.completion_tokens < 32
        done = await keep
        assert done[-1].finish_reason is not FinishReason.CANCELLED
        assert text_of(done) == alone
        assert engine.stats().slots_busy == 0
