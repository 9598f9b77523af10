"""The model router: names, load on demand, LRU and memory eviction, idle and keep_alive
unloads, pinning, load failures (fake engines: no model)."""

from __future__ import annotations

import asyncio

import pytest

from app.engine.router import ModelEntry, ModelRouter, name_key
from app.engine.types import EngineConfig
from app.errors import ModelLoadError, ModelNotFound, Overloaded
from tests.support.fake_engine import FakeEngine


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(model_id: str, *, names: tuple[str, ...] = (), pinned: bool = False, mib: int = 0):
    config = EngineConfig(model_path=f"/models/{model_id}.gguf")
    return ModelEntry(model_id, config, frozenset(names), pinned, mib * 2**20)


class Factory:
    """Builds FakeEngines and remembers them by model path."""

    def __init__(self, *, fail: frozenset[str] = frozenset(), delay_s: float = 0.0) -> None:
        self.built: dict[str, list[FakeEngine]] = {}
        self.fail = fail
        self.delay_s = delay_s

    def __call__(self, config: EngineConfig) -> FakeEngine:
        engine = FakeEngine(start_delay_s=self.delay_s, token_delay_s=0.01)
        if config.model_path in self.fail:
            engine.state = "dead"

            async def broken() -> None:
                raise ModelLoadError("not a model")

            engine.start = broken  # type: ignore[method-assign]  # a load that fails
        self.built.setdefault(config.model_path, []).append(engine)
        return engine


def router(factory: Factory, *entries: ModelEntry, **options: object) -> ModelRouter:
    """A router over ``entries`` whose default model is an extra one, "d", never loaded here
    (the default model always stays, so it would take no part in unloading)."""
    models = (entry("d"), *entries)
    return ModelRouter(models, factory, default_id="d", **options)  # type: ignore[arg-type]


def states(r: ModelRouter) -> dict[str, str]:
    return {s.entry.id: s.state for s in r.status() if s.entry.id != "d"}


def test_name_key_ignores_case_suffix_and_latest() -> None:
    assert name_key(" Qwen3-0.6B.GGUF ") == name_key("qwen3-0.6b:latest") == "qwen3-0.6b"


def test_names_select_models_and_unknown_names_fall_back_or_404() -> None:
    models = (entry("smollm2", names=("SmolLM2-135M-Instruct.Q4_1.gguf",)), entry("other"))
    loose = ModelRouter(models, Factory(), default_id="smollm2")
    assert loose.resolve("SMOLLM2:latest").id == "smollm2"
    assert loose.resolve("smollm2-135m-instruct.q4_1").id == "smollm2"
    assert loose.resolve("Other.gguf").id == "other"
    assert loose.resolve("gpt-4o").id == "smollm2"  # a placeholder name: the default model
    assert loose.resolve(None).id == "smollm2"
    assert loose.knows("other:latest")
    assert not loose.knows("gpt-4o")
    strict = ModelRouter(models, Factory(), default_id="smollm2", strict_names=True)
    with pytest.raises(ModelNotFound, match="available: other, smollm2"):
        strict.resolve("gpt-4o")


async def test_a_model_loads_on_first_use_once_for_concurrent_requests() -> None:
    factory = Factory(delay_s=0.05)
    r = router(factory, entry("a"), entry("b"))
    assert r.loaded_engine("b") is None
    engines = await asyncio.gather(*(r.engine("b") for _ in range(5)))
    assert len({id(e) for e in engines}) == 1
    assert len(factory.built["/models/b.gguf"]) == 1
    assert r.loaded_engine("b") is engines[0]
    assert states(r) == {"a": "unloaded", "b": "ready"}


async def test_the_least_recently_used_idle_model_makes_room() -> None:
    clock = Clock()
    factory = Factory()
    r = router(factory, entry("a"), entry("b"), entry("c"), max_loaded=2, clock=clock)
    await r.engine("a")
    clock.now += 1
    await r.engine("b")
    clock.now += 1
    await r.engine("a")  # a is now the more recent one
    clock.now += 1
    await r.engine("c")
    assert states(r) == {"a": "ready", "b": "unloaded", "c": "ready"}
    assert factory.built["/models/b.gguf"][0].state == "stopped"


async def test_busy_and_pinned_models_are_never_evicted() -> None:
    factory = Factory()
    r = router(factory, entry("a", pinned=True), entry("b"), entry("c"), max_loaded=2)
    await r.engine("a")
    b = await r.engine("b")
    # b is generating: it cannot be unloaded, and a is pinned: no room for c.
    from app.engine.types import GenerationRequest

    stream = b.submit(GenerationRequest("r1", "go"))
    first = await stream.__anext__()
    assert first.text
    with pytest.raises(Overloaded):
        await r.engine("c")
    await stream.aclose()
    await asyncio.sleep(0.05)
    await r.engine("c")
    assert states(r) == {"a": "ready", "b": "unloaded", "c": "ready"}


async def test_the_memory_budget_decides_what_stays() -> None:
    factory = Factory()
    r = router(
        factory,
        entry("a", mib=300),
        entry("b", mib=300),
        entry("big", mib=900),
        max_loaded=4,
        memory_budget_bytes=700 * 2**20,
    )
    await r.engine("a")
    await r.engine("b")
    assert r.loaded_count() == 2
    await r.engine("big")  # larger than the budget: it loads alone
    assert [s.entry.id for s in r.status() if s.state == "ready"] == ["big"]


MODELS3 = (entry("a"), entry("b"), entry("p", pinned=True))


async def test_idle_unload_and_keep_alive() -> None:
    clock = Clock()
    r = router(Factory(), *MODELS3, idle_unload_s=60, max_loaded=3, clock=clock)
    await r.engine("a")
    await r.engine("b", keep_alive_s=5)
    await r.engine("p")
    clock.now += 10
    assert await r.sweep() == ["b"]  # its keep_alive ran out; a's idle time did not
    (b_status,) = [s for s in r.status() if s.entry.id == "b"]
    assert b_status.state == "unloaded"
    clock.now += 60
    assert await r.sweep() == ["a"]  # idle too long; the pinned model stays
    assert [s.entry.id for s in r.status() if s.state == "ready"] == ["p"]


async def test_keep_alive_zero_unloads_at_the_next_sweep_and_negative_keeps_it() -> None:
    clock = Clock()
    r = router(Factory(), entry("a"), entry("b"), idle_unload_s=1, clock=clock)
    await r.engine("a", keep_alive_s=0)
    await r.engine("b", keep_alive_s=-1)
    clock.now += 3600
    assert await r.sweep() == ["a"]
    assert r.loaded_engine("b") is not None


async def test_a_failed_load_names_the_model_and_a_later_request_retries() -> None:
    factory = Factory(fail=frozenset({"/models/bad.gguf"}))
    r = router(factory, entry("a"), entry("bad"))
    with pytest.raises(ModelLoadError, match="not a model"):
        await r.engine("bad")
    (bad,) = [s for s in r.status() if s.entry.id == "bad"]
    assert bad.state == "failed"
    assert bad.last_error == "not a model"
    with pytest.raises(ModelLoadError):
        await r.engine("bad")
    assert len(factory.built["/models/bad.gguf"]) == 2
    assert await r.engine("a") is not None  # the others serve on


async def test_explicit_unload_and_stop() -> None:
    factory = Factory()
    r = router(factory, entry("a"), entry("b"))
    await r.engine("b")
    assert await r.unload("b") is True
    assert await r.unload("b") is False
    await r.engine("a")
    await r.stop()
    assert all(s.state == "unloaded" for s in r.status())


async def test_the_default_model_stays() -> None:
    clock = Clock()
    r = ModelRouter([entry("d"), entry("x")], Factory(), default_id="d", max_loaded=1,
                    idle_unload_s=1, clock=clock)  # fmt: skip
    await r.engine()
    clock.now += 100
    assert await r.sweep() == []
    assert await r.unload("d") is False
    with pytest.raises(Overloaded):  # the default model is the only one that fits
        await r.engine("x")
