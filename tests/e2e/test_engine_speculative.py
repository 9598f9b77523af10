"""Speculative decoding on the real model: the same tokens as plain decoding, in fewer steps.

The engine prices drafts by the time its steps take; on a CPU a batch of n tokens costs
about n single decodes, so it may rightly send no drafts at all. These tests run the real
model behind a backend whose every decode also waits a fixed time (a GPU-like cost: one
more token in a batch is nearly free), so drafts are sent and verified and every path
(acceptance, rejection, trimmed cells, stops) runs on real logits and a real KV cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from app.engine import scheduler as scheduler_module
from app.engine.backend import BatchToken, ModelBackend
from app.engine.service import LlamaEngine
from app.engine.speculative import NgramDrafter
from app.engine.types import (
    EngineConfig,
    FinishReason,
    GenerationRequest,
    Grammar,
    SamplingParams,
    TokenEvent,
)
from tests.e2e.test_engine_batching import chatml

STORY = (
    "Mira kept a small bakery at the end of Harbour Street. Every morning she lit the oven "
    "before dawn, kneaded the dough for the rye loaves, and set out the honey buns on the "
    "blue tray by the window. Fishermen came in first, cold and quiet, and left with warm "
    "bread under their coats. At noon the school children arrived, counting coins for the "
    "cinnamon rolls. In the evening Mira swept the floor, fed the grey cat that slept on the "
    "flour sacks, and wrote the next day's list on the chalkboard by the door."
)
EDIT = chatml(f"Repeat this story exactly, but call the cat 'Pepper':\n\n{STORY}")
PROMPTS = (
    EDIT,
    chatml("Write a short poem about autumn leaves."),
    chatml("List the days of the week, one per line, then list them again."),
)
GREEDY = SamplingParams(temperature=0.0, max_tokens=160)


class GpuLikeBackend:
    """The real backend, each decode taking 15 ms longer whatever its size."""

    def __init__(self, real: ModelBackend) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def decode(self, batch: Sequence[BatchToken]) -> None:
        time.sleep(0.015)
        self._real.decode(batch)


@asynccontextmanager
async def engine(model_path: Path, **config: Any) -> AsyncIterator[LlamaEngine]:
    settings: dict[str, Any] = {
        "n_slots": 4,
        "n_ctx_slot": 1024,
        "n_batch": 256,
        "speculative": "ngram",
        "draft_max": 8,
        "draft_min_accept": 0.0,
        "cache_ram_mb": 0,
    }
    settings.update(config)

    def factory(config: EngineConfig) -> ModelBackend:
        from app.engine.llama import load_backend

        return cast(ModelBackend, GpuLikeBackend(load_backend(config)))

    eng = LlamaEngine(EngineConfig(model_path=str(model_path), **settings), factory)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


async def generate(
    eng: LlamaEngine, rid: str, prompt: str, params: SamplingParams, *, spec: bool
) -> list[TokenEvent]:
    request = GenerationRequest(rid, prompt, params, speculative=spec, use_cache=False)
    return [event async for event in eng.submit(request)]


def outcome(events: list[TokenEvent]) -> tuple[str, list[int | None], FinishReason | None]:
    return (
        "".join(e.text for e in events),
        [e.token_id for e in events if e.token_id is not None],
        events[-1].finish_reason,
    )


async def test_greedy_output_is_token_for_token_the_same_alone_and_four_at_once(
    model_path: Path,
) -> None:
    stop = SamplingParams(temperature=0.0, max_tokens=160, stop=("flour",))
    cases = [(p, GREEDY) for p in PROMPTS] + [(EDIT, stop)]
    # The concurrent streams run the same prompt: streams of different prompts may differ
    # from their outputs alone even without drafts (llama.cpp's CPU kernels round a batch
    # holding other sequences' prompt chunks differently, which can flip a near-tie).
    async with engine(model_path) as eng:
        plain = [await generate(eng, f"p{i}", p, s, spec=False) for i, (p, s) in enumerate(cases)]
        assert eng.stats().draft_tokens_total == 0
        alone = [await generate(eng, f"s{i}", p, s, spec=True) for i, (p, s) in enumerate(cases)]
        stats = eng.stats()
        assert stats.draft_accepted_total > 0  # the edit copies its prompt: drafts hit
        assert stats.draft_accepted_total < stats.draft_tokens_total  # ... and miss
        # Four streams of the edit at once, two of them with the stop string.
        four = [cases[0], cases[3], cases[0], cases[3]]
        together = await asyncio.gather(
            *(generate(eng, f"t{i}", p, s, spec=True) for i, (p, s) in enumerate(four))
        )
    expected = [outcome(events) for events in plain]
    assert [outcome(events) for events in alone] == expected
    # Four streams verifying drafts put 4 x (1 + k) tokens in one ubatch, and llama.cpp's CPU
    # kernels round a batch that size differently from one token (a prompt chunk's logits
    # differ from a decode's the same way): a near-tie in the small model's reply flipped
    # after 15 to 84 tokens, and four streams of different prompts differ from their runs
    # alone even without drafts. Exact identity with drafts is what the fake-backend tests
    # and the single-stream cases above check; here: a common start, and each stream ends as
    # its request says.
    for i, events in enumerate(together):
        want = expected[3 if i % 2 else 0]
        assert outcome(events)[1][:8] == want[1][:8], f"stream {i}"
        assert outcome(events)[2] is want[2]
        assert "flour" not in outcome(events)[0] or i % 2 == 0
    assert expected[3][2] is FinishReason.STOP
    assert "flour" not in expected[3][0]


async def test_seeded_sampling_draws_the_same_tokens_with_drafts(model_path: Path) -> None:
    params = SamplingParams(temperature=0.7, seed=1234, max_tokens=120)
    async with engine(model_path) as eng:
        plain = await generate(eng, "plain", EDIT, params, spec=False)
        spec = await generate(eng, "spec", EDIT, params, spec=True)
        assert eng.stats().draft_accepted_total > 0
    assert outcome(spec) == outcome(plain)


async def test_grammar_constrained_output_is_the_same_with_drafts(model_path: Path) -> None:
    grammar = Grammar('root ::= "Mira " [a-z ,.]+ "."')
    params = SamplingParams(temperature=0.0, max_tokens=80, grammar=grammar)
    async with engine(model_path) as eng:
        plain = await generate(eng, "plain", EDIT, params, spec=False)
        spec = await generate(eng, "spec", EDIT, params, spec=True)
    assert outcome(spec) == outcome(plain)
    assert outcome(spec)[0].startswith("Mira ")


class WrongDrafter(NgramDrafter):
    """Every draft token is off by one: each verification rejects the whole draft."""

    def propose(self, k: int) -> list[int]:
        return [t + 1 for t in super().propose(k)]


async def test_drafts_rejected_every_step_give_the_plain_text_and_the_next_turn_reuses_the_cache(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "NgramDrafter", WrongDrafter)
    follow = "Now tell it again in one sentence."
    results = []
    for spec in (False, True):
        async with engine(model_path, n_slots=1, speculative="ngram" if spec else "off") as eng:
            first = await generate(eng, "t1", EDIT, GREEDY, spec=spec)
            reply = outcome(first)[0]
            turn2 = chatml(
                follow,
                history=(
                    (f"Repeat this story exactly, but call the cat 'Pepper':\n\n{STORY}", reply),
                ),
            )
            request = GenerationRequest("t2", turn2, GREEDY, speculative=spec)
            second = [event async for event in eng.submit(request)]
            stats = eng.stats()
            if spec:
                assert stats.draft_tokens_total > 0
                assert stats.draft_accepted_total == 0
            usage = second[-1].usage
            assert usage is not None
            results.append((outcome(first), outcome(second), usage.cached_prompt_tokens))
    assert results[1] == results[0]
    assert results[1][2] > len(STORY) // 8  # the first turn's cells were reused
