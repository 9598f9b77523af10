"""Per-model presets, the RAM/VRAM split of a model's estimate and the VRAM budget, the
router's per-model restarting/failed states, removing a model (fake engines, tiny GGUFs)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.api.library import gpu_layers_of, library_entries, split_estimate, vram_budget
from app.api.metrics import HttpMetrics, render_metrics
from app.engine.router import ModelEntry, ModelRouter
from app.engine.types import EngineConfig, EngineHealth
from app.errors import ModelInUse, ModelNotFound, Overloaded
from app.models.gguf import read_gguf
from app.models.library import scan_library
from app.serving.chat_template import render_conversation
from app.settings import ConfigFileError, Settings, load_settings
from tests.support.fake_engine import FakeEngine, fake_model_info
from tests.support.gguf_writer import TINY_TENSORS, gguf_bytes, tiny_llama_metadata


def tiny_model(path: Path, layers: int = 4) -> Path:
    """A tiny GGUF whose metadata has the KV shapes (so its KV estimate is not 0)."""
    meta = tiny_llama_metadata() | {
        "llama.block_count": layers,
        "llama.embedding_length": 64,
        "llama.attention.head_count": 4,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gguf_bytes(meta, TINY_TENSORS))
    return path


def library(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    for name in ("alpha", "beta", "sub/gamma"):
        tiny_model(models / f"{name}.gguf")
    return models


def write_config(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "cria.toml"
    config.write_text(text)
    return config


def test_presets_are_read_from_config_tables_with_dashes(tmp_path: Path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages }}")
    config = write_config(
        tmp_path,
        f"""
ctx-size = 512
[presets.beta]
alias = "bee"
ctx-size = 1024
parallel = 2
n-gpu-layers = 0
chat-template-file = "{template}"
system-prompt = "Answer in French."
embeddings = true
pinned = true
""",
    )
    settings = load_settings({}, config)
    preset = settings.presets["beta"]
    assert (preset.alias, preset.ctx_size, preset.parallel, preset.n_gpu_layers) == (
        "bee",
        1024,
        2,
        "0",
    )
    assert preset.pinned
    assert preset.embeddings
    assert preset.system_prompt == "Answer in French."


def test_a_bad_preset_key_is_named(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[presets.beta]\nctx-sise = 1024\n")
    with pytest.raises(ValidationError, match="ctx-sise"):
        load_settings({}, config)
    with pytest.raises(ConfigFileError, match="presetz"):
        load_settings({}, write_config(tmp_path, "[presetz.beta]\nalias = 'x'\n"))


def test_presets_as_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRIA_PRESETS", '{"beta": {"alias": "bee", "ctx-size": 128}}')
    assert Settings().presets["beta"].ctx_size == 128


def test_each_model_gets_its_preset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    models = library(tmp_path)
    settings = Settings(
        model=str(models / "alpha.gguf"),
        models_dir=models,
        ctx_size=256,
        parallel=4,
        presets={
            "Beta.gguf": {"alias": "bee", "ctx-size": 1024, "parallel": 1, "pinned": True},
            "sub/gamma": {"system-prompt": "Be brief.", "n-gpu-layers": "all"},
            "alpha": {"ctx-size": 128},
            "nowhere": {"alias": "x"},
        },
    )
    with caplog.at_level(logging.WARNING):
        entries = library_entries(settings, models / "alpha.gguf", scan_library(models))
    by_id = {e.id: e for e in entries}
    assert list(by_id) == ["alpha", "bee", "sub/gamma"]
    assert by_id["alpha"].config.n_ctx_slot == 128
    assert by_id["alpha"].pinned
    bee = by_id["bee"]
    assert (bee.config.n_ctx_slot, bee.config.n_slots, bee.config.model_alias) == (1024, 1, "bee")
    assert bee.pinned
    assert "beta" in bee.names
    gamma = by_id["sub/gamma"]
    assert gamma.config.system_prompt == "Be brief."
    assert gamma.config.n_gpu_layers == "all"
    assert (gamma.config.n_ctx_slot, gamma.pinned) == (256, False)
    assert "'nowhere' names no model" in caplog.text
    # The estimate follows the preset's slots: 1 x 1024 cells against 4 x 256.
    assert bee.memory_bytes == by_id["sub/gamma"].memory_bytes
    router = ModelRouter(entries, lambda _: FakeEngine(), default_id="alpha")
    assert router.resolve("beta:latest").id == "bee"
    assert router.resolve("BEE").id == "bee"


def test_model_alias_flag_wins_over_a_preset_alias_for_the_default(tmp_path: Path) -> None:
    models = library(tmp_path)
    settings = Settings(
        model=str(models / "alpha.gguf"),
        models_dir=models,
        model_alias="main",
        presets={"alpha": {"alias": "first"}},
    )
    (default, *_) = library_entries(settings, models / "alpha.gguf", scan_library(models))
    assert default.id == "main"
    assert default.config.model_alias == "main"
    assert {"first", "alpha"} <= default.names


def test_the_estimate_splits_between_ram_and_vram(tmp_path: Path) -> None:
    info = read_gguf(tiny_model(tmp_path / "m.gguf", layers=4))
    config = EngineConfig(model_path="m.gguf", n_slots=1, n_ctx_slot=100, n_gpu_layers=0)
    size = 5_000
    cpu = split_estimate(info, size, config, has_gpu=True)
    kv = cpu.ram - size
    assert kv > 0
    assert cpu.vram == 0
    assert split_estimate(info, size, replace(config, n_gpu_layers="all"), has_gpu=False) == cpu
    full = split_estimate(info, size, replace(config, n_gpu_layers="all"), has_gpu=True)
    assert (full.ram, full.vram) == (0, size + kv)
    two = split_estimate(info, size, replace(config, n_gpu_layers=2), has_gpu=True)
    assert two.vram == size * 2 // 5 + kv // 2
    assert two.ram + two.vram == size + kv
    assert gpu_layers_of("auto", 4, True) == 5
    assert gpu_layers_of(99, 4, True) == 5


def test_the_vram_budget_default_and_flag() -> None:
    assert vram_budget(Settings(), None) is None  # no GPU: no check
    assert vram_budget(Settings(), 3 << 30) == 2 << 30
    assert vram_budget(Settings(models_vram=512), 3 << 30) == 512 << 20


def gpu_entry(model_id: str, vram_mib: int, *, pinned: bool = False) -> ModelEntry:
    config = EngineConfig(model_path=f"/models/{model_id}.gguf")
    return ModelEntry(model_id, config, frozenset(), pinned, 10 << 20, vram_mib << 20)


async def test_the_vram_budget_decides_what_stays() -> None:
    entries = [gpu_entry("d", 0), gpu_entry("a", 600), gpu_entry("b", 600), gpu_entry("c", 300)]
    router = ModelRouter(
        entries, lambda _: FakeEngine(), default_id="d", max_loaded=8, vram_budget_bytes=1 << 30
    )
    await router.engine("a")
    await router.engine("c")  # 900 MiB of 1024: both fit
    await router.engine("b")  # 1500 MiB: the least recently used (a) goes
    states = {s.entry.id: s.state for s in router.status()}
    assert states == {"d": "unloaded", "a": "unloaded", "b": "ready", "c": "ready"}
    pinned = ModelRouter(
        [gpu_entry("d", 0), gpu_entry("a", 900, pinned=True), gpu_entry("b", 600)],
        lambda _: FakeEngine(),
        default_id="d",
        vram_budget_bytes=1 << 30,
    )
    await pinned.engine("a")
    with pytest.raises(Overloaded):  # the pinned model never makes room
        await pinned.engine("b")


async def test_a_workers_restarting_and_failed_states_show_per_model() -> None:
    engine = FakeEngine()
    router = ModelRouter([gpu_entry("d", 0)], lambda _: engine, default_id="d")
    await router.engine()
    engine.health = lambda: EngineHealth("restarting", "the engine process was killed", 1)  # type: ignore[method-assign]
    (status,) = router.status()
    assert (status.state, status.last_error, status.restarts) == (
        "restarting",
        "the engine process was killed",
        1,
    )
    engine.health = lambda: EngineHealth("failed", "crashed 3 times in 60 s", 3)  # type: ignore[method-assign]
    (status,) = router.status()
    assert (status.state, status.last_error) == ("failed", "crashed 3 times in 60 s")
    metrics = render_metrics(EngineHealth("ready"), None, HttpMetrics(), models=[status]).decode()
    assert 'cria_model_state{model="d",state="failed"} 1.0' in metrics
    assert 'cria_model_state{model="d",state="ready"} 0.0' in metrics
    assert 'cria_model_restarts_total{model="d"} 3.0' in metrics
    assert 'cria_model_last_error{error="crashed 3 times in 60 s",model="d"} 1.0' in metrics


async def test_release_refuses_the_default_pinned_and_busy_models() -> None:
    engines: dict[str, FakeEngine] = {}

    def factory(config: EngineConfig) -> FakeEngine:
        return engines.setdefault(config.model_path, FakeEngine())

    entries = [gpu_entry("d", 0), gpu_entry("p", 0, pinned=True), gpu_entry("a", 0)]
    router = ModelRouter(entries, factory, default_id="d", max_loaded=4)
    with pytest.raises(ModelInUse, match="default"):
        await router.release("d")
    with pytest.raises(ModelInUse, match="pinned"):
        await router.release("p")
    with pytest.raises(ModelNotFound):
        await router.release("nope")
    assert await router.unload("p") is False  # pinned: never unloaded, even when asked
    await router.engine("a")
    entry = await router.release("a")  # loaded and idle: unloaded first
    assert entry.id == "a"
    assert router.loaded_engine("a") is None
    router.forget("a")
    assert not router.knows("a")


def test_a_preset_system_prompt_goes_first_in_every_chat() -> None:
    info = replace(fake_model_info(), system_prompt="Be brief.")
    prompt, _ = render_conversation(
        [{"role": "user", "content": "hi"}], info, content_as_text=False
    )
    assert str(prompt).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    # It replaces CRIA's default system prompt, and a request's own system message wins.
    prompt, _ = render_conversation(
        [{"role": "user", "content": "hi"}], info, "Default.", content_as_text=False
    )
    assert "Default." not in str(prompt)
    own = [{"role": "system", "content": "Mine."}, {"role": "user", "content": "hi"}]
    prompt, _ = render_conversation(own, info, content_as_text=False)
    assert "Be brief." not in str(prompt)
    assert "Mine." in str(prompt)


def test_the_vram_probe_runs_in_a_process_and_finds_no_gpu_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.engine.llama import vram

    monkeypatch.setattr(vram, "gpu_build", lambda: False)
    assert vram.probe_free_vram() is None  # a CPU build: not even a process
    monkeypatch.setattr(vram, "gpu_build", lambda: True)
    # The query itself, in a spawned process: a GPU's free bytes, or None on a CPU host.
    found = vram.probe_free_vram()
    assert found is None or found > 0


async def test_pinned_models_load_after_the_default_one() -> None:
    from app.api.runtime import EngineRuntime

    entries = [gpu_entry("d", 0), gpu_entry("p", 0, pinned=True), gpu_entry("a", 0)]
    router = ModelRouter(entries, lambda _: FakeEngine(), default_id="d", max_loaded=3)

    async def build(_: Settings) -> ModelRouter:
        return router

    runtime = EngineRuntime(Settings())
    runtime.start_loading(build)
    for _ in range(200):
        if {s.entry.id: s.state for s in router.status()}["p"] == "ready":
            break
        await asyncio.sleep(0.01)
    assert {s.entry.id: s.state for s in router.status()} == {
        "d": "ready",
        "p": "ready",
        "a": "unloaded",
    }
    await runtime.stop()
