"""Text and limits on the real model: stop strings, emoji/CJK, context and queue limits."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from app.engine.service import LlamaEngine
from app.engine.types import FinishReason, GenerationRequest, SamplingParams
from app.errors import ContextLengthExceeded, Overloaded
from tests.e2e.test_engine_batching import chatml, generate, running_engine, text_of

REPLACEMENT = "\ufffd"


async def test_stop_string_split_over_three_tokens_ends_the_text_before_it(
    model_path: Path,
) -> None:
    async with running_engine(model_path) as engine:
        prompt = chatml("Describe a cat in two sentences.")
        free = await generate(
            engine, "free", prompt, SamplingParams(temperature=0.0, max_tokens=40)
        )
        deltas = [e.text for e in free if not e.is_final]
        # A stop string made of the end of token k, all of token k+1 and the start of k+2.
        k = next(
            i
            for i in range(8, len(deltas) - 2)
            if len(deltas[i]) >= 2 and deltas[i + 1] and len(deltas[i + 2]) >= 2
        )
        stop = deltas[k][-2:] + deltas[k + 1] + deltas[k + 2][:2]
        full = text_of(free)
        params = SamplingParams(temperature=0.0, max_tokens=40, stop=(stop, "never-seen-stop"))
        stopped = await generate(engine, "stopped", prompt, params)
        assert stopped[-1].finish_reason is FinishReason.STOP
        assert text_of(stopped) == full[: full.index(stop)]
        assert all(stop not in e.text for e in stopped)


async def test_emoji_stream_without_replacement_chars(model_path: Path) -> None:
    async with running_engine(model_path) as engine:
        params = SamplingParams(temperature=0.0, max_tokens=24)
        events = await generate(engine, "emoji", chatml("Repeat after me: 🎉🎉🎉"), params)
        text = text_of(events)
        assert "🎉" in text
        assert all(REPLACEMENT not in e.text for e in events)
        # the emoji's bytes came in several tokens: some deltas were held back (empty)
        assert any(e.token_id is not None and e.text == "" for e in events)


async def test_cjk_stream_without_replacement_chars(model_path: Path) -> None:
    async with running_engine(model_path) as engine:
        params = SamplingParams(temperature=0.0, max_tokens=24)
        prompt = chatml("Write the word 'hello' in Japanese.")
        events = await generate(engine, "cjk", prompt, params)
        text = text_of(events)
        assert any("HIRAGANA" in unicodedata.name(ch, "") for ch in text)
        assert all(REPLACEMENT not in e.text for e in events)
        assert any(e.token_id is not None and e.text == "" for e in events)


def prompt_of_length(engine: LlamaEngine, n_tokens: int) -> str:
    """A chat prompt of exactly ``n_tokens`` tokens (the model splits digits one by one)."""
    digits = ""
    while engine.count_tokens(prompt := chatml("Continue: " + digits)) < n_tokens:
        digits += str(len(digits) % 10)
    assert engine.count_tokens(prompt) == n_tokens
    return prompt


async def test_prompt_over_the_slot_context_raises_with_counts(model_path: Path) -> None:
    async with running_engine(model_path, n_ctx_slot=256) as engine:
        limit = engine.model_info().n_ctx_slot
        assert limit >= 256  # llama.cpp may pad the per-sequence context
        with pytest.raises(ContextLengthExceeded) as info:
            engine.submit(GenerationRequest("big", prompt_of_length(engine, limit)))
        assert (info.value.prompt_tokens, info.value.limit) == (limit, limit)
        assert engine.stats().requests_total == 0
        events = await generate(
            engine, "fits", prompt_of_length(engine, limit - 1), SamplingParams(temperature=0.0)
        )
        assert events[-1].usage is not None
        assert events[-1].usage.completion_tokens <= 2


async def test_generation_that_fills_the_context_ends_with_length(model_path: Path) -> None:
    async with running_engine(model_path, n_ctx_slot=256) as engine:
        limit = engine.model_info().n_ctx_slot
        prompt = prompt_of_length(engine, limit - 6)
        params = SamplingParams(temperature=0.0, ignore_eos=True)
        events = await generate(engine, "fill", prompt, params)
        final = events[-1]
        assert final.finish_reason is FinishReason.LENGTH
        assert final.usage is not None
        # every cell was used; the last sampled token needs none
        assert final.usage.completion_tokens == 7
        assert engine.stats().kv_cells_used == limit


async def test_full_queue_raises_overloaded_at_once(model_path: Path) -> None:
    async with running_engine(model_path, n_slots=1, max_queue=1) as engine:
        params = SamplingParams(temperature=0.0, max_tokens=8)
        first = engine.submit(GenerationRequest("r1", chatml("Hi"), params))
        second = engine.submit(GenerationRequest("r2", chatml("Hello"), params))
        with pytest.raises(Overloaded) as info:
            engine.submit(GenerationRequest("r3", chatml("Hey"), params))
        assert info.value.max_queue == 1
        results = [[e async for e in first], [e async for e in second]]
        assert [r[-1].finish_reason for r in results] == [FinishReason.LENGTH] * 2
