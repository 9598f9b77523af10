"""The real engine on the default model: the host-RAM prompt cache and per-sequence failures.

A conversation evicted from its slot is saved to host RAM and restored when its next turn
comes; what the model then writes must be exactly what it writes when the conversation
never left its slot (greedy). A decode that fails on one request's prompt chunk ends that
request alone: the streams decoding beside it finish with the text they have without it.
Short replies, one CPU thread, so the module stays quick on a 2-core machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from app.engine.backend import BatchToken, DecodeError, ModelBackend
from app.engine.service import LlamaEngine
from app.engine.types import EngineConfig, FinishReason, GenerationRequest, SamplingParams
from tests.e2e.test_engine_batching import chatml, generate, text_of

PARAMS = SamplingParams(temperature=0.0, max_tokens=24)
RETOKENIZATION_SLACK = 4
"""Tokens at the end of a reply that its text may tokenize to differently in the next turn."""


@asynccontextmanager
async def engine_on(
    model_path: Path,
    backend_factory: Callable[[EngineConfig], ModelBackend] | None = None,
    **config: Any,
) -> AsyncIterator[LlamaEngine]:
    """A started LlamaEngine on the real model, small and on one thread (stopped on exit)."""
    settings: dict[str, Any] = {"n_slots": 1, "n_ctx_slot": 512, "n_batch": 256, "n_threads": 1}
    settings.update(config)
    engine = LlamaEngine(EngineConfig(model_path=str(model_path), **settings), backend_factory)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


CHAT_A = ("Tell me about the moon in a few sentences.", "What about the sun?")
OTHER_CHAT = chatml("Name three birds.", system="You are a pirate who loves the sea.")


async def test_a_conversation_restored_from_host_ram_continues_as_if_it_never_left(
    model_path: Path,
) -> None:
    """Restored cells are the saved ones, bit for bit: the same text as cells never evicted.

    The reference keeps the conversation in its slot (``cache_ram_mb=0``, no other chat in
    between), so both runs feed the model the same chunks. An engine with no prompt cache
    at all prefills the whole second prompt in one chunk instead, and llama.cpp's results
    depend on chunking (the same prompt gives other greedy text at n_batch 16 than at 256),
    so that run is not a reference for bit-identical output.
    """
    first = chatml(CHAT_A[0])
    async with engine_on(model_path) as engine:  # one slot: every other chat evicts it
        turn1 = await generate(engine, "a1", first, PARAMS)
        reply1 = text_of(turn1)
        usage1 = turn1[-1].usage
        assert usage1 is not None
        other = await generate(engine, "b1", OTHER_CHAT, PARAMS)
        assert other[-1].usage is not None
        # The moon chat was not kept in cells: only the template header both chats start with.
        assert other[-1].usage.cached_prompt_tokens < 8
        host = engine.stats().host_cache
        assert host is not None
        assert host.saves >= 1
        assert host.hits == 0
        second = chatml(CHAT_A[1], history=((CHAT_A[0], reply1),))
        turn2 = await generate(engine, "a2", second, PARAMS)
        usage2 = turn2[-1].usage
        assert usage2 is not None
        history = usage1.prompt_tokens + usage1.completion_tokens
        assert history - RETOKENIZATION_SLACK <= usage2.cached_prompt_tokens < usage2.prompt_tokens
        host = engine.stats().host_cache
        assert host is not None
        assert host.hits == 1
        assert host.restored_tokens >= usage2.cached_prompt_tokens
        assert host.restored_bytes > 0
    async with engine_on(model_path, cache_ram_mb=0) as kept:
        assert kept.stats().host_cache is None
        kept1 = await generate(kept, "a1", first, PARAMS)
        kept2 = await generate(kept, "a2", second, PARAMS)  # its cells never left the slot
        assert kept2[-1].usage == usage2
        # Without host RAM, the other chat's turn costs the whole history (all but the
        # template header both chats start with).
        await generate(kept, "b1", OTHER_CHAT, PARAMS)
        again = await generate(kept, "a2-again", second, PARAMS)
        assert again[-1].usage is not None
        assert again[-1].usage.cached_prompt_tokens < 8
    assert text_of(kept1) == reply1
    assert len(text_of(turn2)) > 10
    assert text_of(turn2) == text_of(kept2)
    assert turn2[-1].finish_reason == kept2[-1].finish_reason


LONG_SYSTEM = (
    "You are the help desk of a small town library. Answer in one or two short sentences, "
    "be friendly, never invent opening hours, and suggest asking a librarian when unsure."
)


async def test_a_new_chat_copies_a_shared_system_prompt_from_another_slot(
    model_path: Path,
) -> None:
    """A new chat that shares only the system prompt with a busier slot gets those cells by
    copy, into an empty slot, and writes what it writes when the same cells are reused in
    place; the first chat keeps its slot."""
    question_a = "What is a library card?"
    chat_a = chatml(question_a, system=LONG_SYSTEM)
    chat_b = chatml("Can I borrow a film?", system=LONG_SYSTEM)
    params = SamplingParams(temperature=0.0, max_tokens=48, ignore_eos=True)
    async with engine_on(model_path, n_slots=2) as engine:
        a1 = await generate(engine, "a1", chat_a, params)
        b1 = await generate(engine, "b1", chat_b, params)
        history = ((question_a, text_of(a1)),)
        a_next = chatml("And a lost one?", system=LONG_SYSTEM, history=history)
        a2 = await generate(engine, "a2", a_next, PARAMS)
    async with engine_on(model_path, n_slots=1) as engine:  # the same cells, kept in place
        await generate(engine, "a1", chat_a, params)
        in_place = await generate(engine, "b1", chat_b, params)
    copied, kept = b1[-1].usage, in_place[-1].usage
    assert copied is not None
    assert kept is not None
    assert copied.cached_prompt_tokens == kept.cached_prompt_tokens > 30  # the system prompt
    assert text_of(b1) == text_of(in_place)
    # Chat A's 48-token reply left its slot below the similarity rule for chat B (a copy, not
    # a takeover), so A's next turn found its whole history where it left it.
    usage_a1, usage_a2 = a1[-1].usage, a2[-1].usage
    assert usage_a1 is not None
    assert usage_a2 is not None
    history_tokens = usage_a1.prompt_tokens + usage_a1.completion_tokens
    assert usage_a2.cached_prompt_tokens >= history_tokens - RETOKENIZATION_SLACK


class PoisonedBackend:
    """The real backend, except that a decode batch holding ``poison`` fails.

    A failed llama_decode leaves the KV cache as it was; so does this (the real decode is
    not called), as after llama.cpp's "no KV slot" failure.
    """

    def __init__(self, real: ModelBackend) -> None:
        self._real = real
        self.poison: int | None = None
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def decode(self, batch: Sequence[BatchToken]) -> None:
        if self.poison is not None and any(t.token == self.poison for t in batch):
            self.failures += 1
            raise DecodeError(-1, "injected failure for a poisoned prompt chunk")
        self._real.decode(batch)


QUESTIONS = ("Describe a sunny day.", "Name three fruits.", "Count from one to ten.")
STREAM = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
"""The three streams: long enough to still decode when the poisoned chunk comes."""
POISON_WORD = " xylophone"
POISONED_USER = (
    "Read this and summarize it: "
    + "The quick brown fox jumps over the lazy dog. " * 4
    + f"Then it played the{POISON_WORD}. "
    + "The dog slept all afternoon in the sun. " * 3
)


async def test_a_decode_failure_in_a_prefill_ends_only_that_request(model_path: Path) -> None:
    from app.engine.llama import load_backend

    poisoned: list[PoisonedBackend] = []

    def factory(config: EngineConfig) -> ModelBackend:
        poisoned.append(PoisonedBackend(load_backend(config)))
        return cast(ModelBackend, poisoned[0])

    # A small prefill budget: the poisoned prompt takes several steps beside the streams.
    async with engine_on(
        model_path, factory, n_slots=4, n_batch=64, prefill_budget=16, cache_ram_mb=0
    ) as engine:
        backend = poisoned[0]
        prompts = [chatml(q) for q in QUESTIONS]
        bad_prompt = chatml(POISONED_USER)
        poison = engine.tokenize(POISON_WORD)[0]
        assert all(poison not in engine.tokenize(p) for p in prompts)
        bad_tokens = engine.tokenize(bad_prompt)
        assert poison in bad_tokens
        assert bad_tokens.index(poison) > 40  # past the first prefill chunks
        alone = await asyncio.gather(
            *(generate(engine, f"alone{i}", p, STREAM) for i, p in enumerate(prompts))
        )
        assert all(poison not in [e.token_id for e in events] for events in alone)
        backend.poison = poison

        streams = [
            aiter(engine.submit(GenerationRequest(f"s{i}", p, STREAM, use_cache=False)))
            for i, p in enumerate(prompts)
        ]
        firsts = [await anext(stream) for stream in streams]  # all three are decoding
        assert all(event.token_id is not None for event in firsts)
        bad = engine.submit(GenerationRequest("poisoned", bad_prompt, PARAMS))

        async def rest(stream: AsyncIterator[Any]) -> list[Any]:
            return [event async for event in stream]

        *others, bad_events = await asyncio.gather(*(rest(s) for s in streams), rest(bad))
        # The batch of the three decode tokens and the poisoned chunk failed, then the
        # chunk alone; the decode tokens alone went through.
        assert backend.failures == 2
        final = bad_events[-1]
        assert final.finish_reason is FinishReason.ERROR
        assert final.error is not None
        assert "decode failed" in final.error
        assert final.usage is not None
        assert final.usage.completion_tokens == 0
        for first, tail, solo in zip(firsts, others, alone, strict=True):
            events = [first, *tail]
            assert text_of(events) == text_of(solo)
            assert events[-1].finish_reason == solo[-1].finish_reason
            assert events[-1].error is None
        stats = engine.stats()
        assert stats.slots_busy == 0
        assert stats.requests_active == 0
        # The engine goes on serving on every slot, the poisoned prompt's included.
        backend.poison = None
        after = await asyncio.gather(
            *(
                generate(engine, f"after{i}", p, STREAM)
                for i, p in enumerate([*prompts, bad_prompt])
            )
        )
        assert [text_of(events) for events in after[:3]] == [text_of(events) for events in alone]
        assert after[3][-1].finish_reason in (FinishReason.STOP, FinishReason.LENGTH)
        assert text_of(after[3])
