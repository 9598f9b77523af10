"""LoRA adapters on the real default model: applied per request, batched by adapter set.

The adapters are written here (``tests/support/lora_writer.py``, the layout of llama.cpp's
convert_lora_to_gguf.py): ``zero`` has B = 0 (a no-op), ``x`` and ``y`` are random rank-4
adapters on the attention projections. Greedy, short replies.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.engine.llama import load_backend
from app.engine.types import (
    EngineConfig,
    GenerationRequest,
    LoraAdapter,
    LoraScale,
    SamplingParams,
    TokenEvent,
)
from app.errors import InvalidRequest, ModelLoadError
from tests.e2e.test_engine_batching import QUESTIONS, chatml, running_engine, text_of
from tests.support.lora_writer import write_lora

GREEDY = SamplingParams(temperature=0.0, max_tokens=16)
ZERO, X, Y = LoraScale(0), LoraScale(1), LoraScale(2)


@pytest.fixture(scope="module")
def adapters(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[LoraAdapter, ...]:
    folder = tmp_path_factory.mktemp("lora")
    return (
        LoraAdapter(0, "zero", str(write_lora(folder / "zero.gguf", model_path, zero=True))),
        LoraAdapter(1, "x", str(write_lora(folder / "x.gguf", model_path, seed=1))),
        LoraAdapter(2, "y", str(write_lora(folder / "y.gguf", model_path, seed=2))),
    )


async def run(
    engine: object, rid: str, prompt: str, lora: tuple[LoraScale, ...] = ()
) -> list[TokenEvent]:
    request = GenerationRequest(rid, prompt, GREEDY, lora=lora)
    return [event async for event in engine.submit(request)]  # type: ignore[attr-defined]


async def test_zero_adapter_is_the_base_and_a_real_one_changes_the_reply(
    model_path: Path, adapters: tuple[LoraAdapter, ...]
) -> None:
    prompt = chatml(QUESTIONS[1])
    async with running_engine(model_path, lora=adapters) as engine:
        base = text_of(await run(engine, "base", prompt))
        zero = text_of(await run(engine, "zero", prompt, (ZERO,)))
        x = text_of(await run(engine, "x", prompt, (X,)))
        off = text_of(await run(engine, "x-off", prompt, (LoraScale(1, 0.0),)))
        listed = await engine.lora_adapters()
    assert base
    assert zero == base
    assert x != base
    assert off == base  # scale 0 is the base model (llama.cpp drops zero-scale adapters)
    assert [(a.id, a.name, a.scale) for a in listed] == [
        (0, "zero", 1.0),
        (1, "x", 1.0),
        (2, "y", 1.0),
    ]


async def test_same_reply_alone_and_next_to_other_adapters(
    model_path: Path, adapters: tuple[LoraAdapter, ...]
) -> None:
    prompt = chatml(QUESTIONS[0])
    async with running_engine(model_path, lora=adapters, prompt_cache=False) as engine:
        alone = text_of(await run(engine, "alone", prompt, (X,)))
        mixed = await asyncio.gather(
            run(engine, "x-again", prompt, (X,)),
            run(engine, "y", chatml(QUESTIONS[2]), (Y,)),
            run(engine, "base", chatml(QUESTIONS[3])),
            run(engine, "x-other", chatml(QUESTIONS[4]), (X,)),
        )
        stats = engine.stats()
    assert text_of(mixed[0]) == alone
    assert all(events[-1].error is None for events in mixed)
    assert stats.requests_total == 5


async def test_cached_prefixes_are_not_shared_across_adapters(
    model_path: Path, adapters: tuple[LoraAdapter, ...]
) -> None:
    prompt = chatml(QUESTIONS[5])
    async with running_engine(model_path, lora=adapters, n_slots=1) as engine:
        x_first = await run(engine, "x1", prompt, (X,))
        base = await run(engine, "base", prompt)  # the slot holds x's cells: not reused
        x_again = await run(engine, "x2", prompt, (X,))  # restored from the host cache, x's
        y = await run(engine, "y", prompt, (Y,))
        x_fresh = text_of(x_first)
    assert base[-1].usage is not None
    assert base[-1].usage.cached_prompt_tokens == 0
    assert y[-1].usage is not None
    assert y[-1].usage.cached_prompt_tokens == 0
    assert x_again[-1].usage is not None
    assert x_again[-1].usage.cached_prompt_tokens > 0
    assert text_of(x_again) == x_fresh
    assert text_of(base) != x_fresh


async def test_unknown_adapter_id_is_refused(
    model_path: Path, adapters: tuple[LoraAdapter, ...]
) -> None:
    async with running_engine(model_path, lora=adapters[:1]) as engine:
        with pytest.raises(InvalidRequest, match="no LoRA adapter with id 5"):
            engine.submit(GenerationRequest("bad", "Hi", GREEDY, lora=(LoraScale(5),)))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("shape", "incorrect shape"),
        ("architecture", "made for a 'qwen2' model and the base model is 'llama'"),
        ("empty", "no lora_a/lora_b tensor pairs"),
    ],
)
def test_a_mismatched_adapter_is_a_clear_load_error(
    model_path: Path, tmp_path: Path, kind: str, message: str
) -> None:
    path = tmp_path / f"{kind}.gguf"
    if kind == "shape":
        write_lora(path, model_path, wrong_shape=True)
    elif kind == "architecture":
        write_lora(path, model_path, architecture="qwen2")
    else:
        write_lora(path, model_path, projections=())
    config = EngineConfig(
        str(model_path), n_slots=1, n_ctx_slot=256, lora=(LoraAdapter(0, "bad-one", str(path)),)
    )
    with pytest.raises(ModelLoadError, match=message) as caught:
        load_backend(config)
    assert "LoRA adapter 'bad-one'" in caught.value.message
    assert str(path) in caught.value.message
