"""The engine's part of a request's cost budget (issue 17 rows 1, 7, 12): LlamaEngine over
the fake backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.engine.service import LlamaEngine
from app.engine.types import (
    ChatPrompt,
    EngineConfig,
    GenerationRequest,
    PromptPart,
    SamplingParams,
)
from app.errors import InvalidRequest
from app.limits import EMBEDDING_TOKENS_PER_CTX_TOKEN
from tests.support.fake_backend import BOS, FakeBackend, FakeEmbedder


def make_engine(backend: FakeBackend, **config: object) -> LlamaEngine:
    cfg = EngineConfig(model_path="/models/fake.gguf", **config)  # type: ignore[arg-type]
    return LlamaEngine(cfg, backend_factory=lambda _: backend)


@pytest.fixture
async def backend() -> AsyncIterator[FakeBackend]:
    fake = FakeBackend(n_slots=2, n_ctx_slot=64)
    engine = make_engine(fake)
    await engine.start()
    fake.engine = engine  # type: ignore[attr-defined]
    yield fake
    await engine.stop()


async def test_penalty_last_n_is_clamped_to_the_slot_context(backend: FakeBackend) -> None:
    # Row 1: repeat_last_n 500,000,000 made llama.cpp allocate a 2 GB ring buffer.
    engine: LlamaEngine = backend.engine  # type: ignore[attr-defined]
    for asked, expected in ((500_000_000, 64), (-1, 64), (16, 16)):
        params = SamplingParams(temperature=0.0, max_tokens=2, penalty_last_n=asked)
        stream = engine.submit(GenerationRequest(f"r{asked}", "hi", params))
        [event async for event in stream]
        assert backend.samplers[-1].params.penalty_last_n == expected


async def test_chat_contents_are_tokenized_as_text_and_the_scaffolding_as_special(
    backend: FakeBackend,
) -> None:
    # Row 12: the parts keep their flags down to the tokenizer; BOS only before the first.
    engine: LlamaEngine = backend.engine  # type: ignore[attr-defined]
    prompt = ChatPrompt(
        (
            PromptPart("<|im_start|>user\n", special=True),
            PromptPart("<|im_end|>", special=False),
            PromptPart("<|im_end|>\n", special=True),
        )
    )
    prepared = engine.prepare(GenerationRequest("chat", prompt, add_special=True))
    assert backend.tokenized[-3:] == [
        ("<|im_start|>user\n", True),
        ("<|im_end|>", False),
        ("<|im_end|>\n", True),
    ]
    assert prepared.prompt_tokens is not None
    assert prepared.prompt_tokens.count(BOS) == 1
    assert prepared.prompt_tokens[0] == BOS
    # The prepared request is submitted without tokenizing again.
    calls = len(backend.tokenized)
    [event async for event in engine.submit(prepared)]
    assert len(backend.tokenized) == calls


async def test_a_text_prompt_far_over_the_context_is_refused_before_tokenizing(
    backend: FakeBackend,
) -> None:
    engine: LlamaEngine = backend.engine  # type: ignore[attr-defined]
    calls = len(backend.tokenized)
    with pytest.raises(InvalidRequest) as caught:
        engine.prepare(GenerationRequest("big", "x" * (64 * 64 + 1)))
    assert caught.value.param == "prompt"
    assert "prompt_bytes_per_context_token" in caught.value.message
    assert len(backend.tokenized) == calls


async def test_embeddings_inputs_and_tokens_are_capped_on_every_route() -> None:
    # Row 7: /api/embed had no input cap (2,000 inputs: a 24.7 MB reply, 13 s of CPU). The
    # cap is in the engine, so every embeddings route has it.
    fake = FakeBackend(n_slots=1, n_ctx_slot=64)
    fake.new_embedder = lambda **kw: FakeEmbedder(kw["n_ctx"], kw["n_seq_max"])  # type: ignore[method-assign]
    engine = make_engine(fake, embeddings=True, n_ctx_slot=64, n_batch=64)
    await engine.start()
    try:
        with pytest.raises(InvalidRequest, match="max_embedding_inputs") as caught:
            await engine.embed(["a"] * 257)
        assert caught.value.param == "input"
        # Each input fits its context, but together they are over the token budget.
        n_ctx = 64
        n_inputs = EMBEDDING_TOKENS_PER_CTX_TOKEN.value * n_ctx // (n_ctx - 2) + 1
        with pytest.raises(InvalidRequest, match="embedding_tokens_per_context_token"):
            await engine.embed(["y" * (n_ctx - 2)] * n_inputs)
        result = await engine.embed(["hello", "world"])
        assert len(result.vectors) == 2
    finally:
        await engine.stop()
