"""The model library as the router sees it: entries from the models folder, the --model
model and the config file's presets, each with its RAM and VRAM estimates and budgets.

A preset (``[presets.NAME]``, see ``app.settings.ModelPreset``) changes its model's engine
settings, names (its alias becomes the id clients see; the old id still selects it) and
pinning. A model offloaded to a GPU (``n_gpu_layers``) splits its estimate: the offloaded
layers' share of the weights and of the KV cache counts against the VRAM budget
(``--models-vram``, default the GPUs' free memory at start less a margin), the rest against
the RAM budget (``--models-memory``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from app.engine.router import ModelEntry, ModelRouter
from app.engine.types import EngineConfig, GpuLayers
from app.models.builtin import BUILTIN_MODELS
from app.models.gguf import GGUFInfo
from app.models.library import LibraryModel, kv_bytes, scan_library
from app.settings import ModelPreset, Settings, find_preset, parse_lora

logger = logging.getLogger(__name__)

MEMORY_MARGIN_BYTES = 1 << 30  # left for the server itself, the OS and compute buffers


def default_model_id(settings: Settings, path: Path | None = None) -> str:
    """The default model's id: ``--model-alias``, else the file's (or the reference's) stem."""
    if settings.model_alias:
        return settings.model_alias
    return (path or Path(settings.model)).name.removesuffix(".gguf")


def model_names(settings: Settings) -> frozenset[str]:
    """Names that mean the --model model besides its id: the reference as typed
    (``smollm2``, a path, ``hf://...``), its alias, built-in names of the same file, and its
    LoRA adapters' names (a request naming one runs on this model, with the adapter)."""
    names = {settings.model, Path(settings.model).name, Path(settings.model).stem}
    names |= {name for name, spec in BUILTIN_MODELS.items() if spec.filename in names}
    if settings.model_alias:
        names.add(settings.model_alias)
    names |= {parse_lora(spec)[0] for spec in settings.lora}  # its LoRA adapters run on it
    return frozenset(name.strip() for name in names if name.strip())


@dataclass(frozen=True)
class Split:
    """A model's estimate: bytes in RAM and bytes on the GPU."""

    ram: int
    vram: int


def gpu_layers_of(layers: GpuLayers, n_layers: int, has_gpu: bool) -> int:
    """Layers a setting offloads out of ``n_layers`` + 1 (the output layer counts, as in
    llama.cpp); 'auto' plans for all of them (it offloads as many as fit)."""
    if not has_gpu or layers == 0:
        return 0
    if layers in ("all", "auto"):
        return n_layers + 1
    return min(int(layers), n_layers + 1)


def split_estimate(
    info: GGUFInfo | None, size: int, config: EngineConfig, *, has_gpu: bool
) -> Split:
    """Weights + KV for ``config``'s slots, split between RAM and VRAM by the offloaded share
    of the layers (weights: out of layers + 1; KV: out of the repeating layers)."""
    kv = kv_bytes(info, config.n_slots * config.n_ctx_slot, config.kv_cache_type) if info else 0
    block_count = info.metadata.get(f"{info.architecture}.block_count") if info else None
    n_layers = block_count if isinstance(block_count, int) and block_count > 0 else 0
    offloaded = gpu_layers_of(config.n_gpu_layers, n_layers, has_gpu) if n_layers else 0
    if offloaded == 0:
        return Split(size + kv, 0)
    weights_gpu = size * offloaded // (n_layers + 1)
    kv_gpu = kv * min(offloaded, n_layers) // n_layers
    return Split(size - weights_gpu + kv - kv_gpu, weights_gpu + kv_gpu)


def _entry(
    settings: Settings,
    entry_id: str,
    names: frozenset[str],
    config: EngineConfig,
    model: LibraryModel | None,
    path: Path,
    *,
    has_gpu: bool,
    pinned: bool = False,
) -> ModelEntry:
    """One router entry, with its preset (matched by any of its names) applied."""
    preset: ModelPreset | None = None
    found = find_preset(settings.presets, {entry_id, *names, path.name, path.stem})
    if found is not None:
        preset = found[1]
        config = preset.apply(config)
        if preset.alias:
            names = names | {entry_id}
            entry_id = preset.alias
    info = model.info if model is not None else None
    split = split_estimate(info, path.stat().st_size, config, has_gpu=has_gpu)
    return ModelEntry(
        entry_id,
        replace(config, model_alias=entry_id),
        names,
        pinned or (preset is not None and preset.pinned),
        split.ram,
        split.vram,
    )


def library_entries(
    settings: Settings, default_path: Path, library: list[LibraryModel], *, has_gpu: bool = False
) -> list[ModelEntry]:
    """The router's entries: the --model model first, then the rest of the library."""
    same = next((m for m in library if m.path.resolve() == default_path.resolve()), None)
    names = model_names(settings) | (same.names | {same.id} if same else frozenset())
    default_id = default_model_id(settings, default_path)
    config = settings.engine_config(default_path)
    if settings.model_alias:  # --model-alias names it, whatever a preset's alias says
        names |= {default_id}
    default = _entry(
        settings, default_id, names, config, same, default_path, has_gpu=has_gpu, pinned=True
    )
    if settings.model_alias and default.id != settings.model_alias:
        default = replace(
            default,
            id=settings.model_alias,
            names=default.names | {default.id},
            config=replace(default.config, model_alias=settings.model_alias),
        )
    entries = [default]
    for model in library:
        if model is same:
            continue
        # --lora adapters belong to the --model model only.
        config = replace(settings.engine_config(model.path), lora=())
        entries.append(
            _entry(settings, model.id, model.names, config, model, model.path, has_gpu=has_gpu)
        )
    _warn_unused_presets(settings, entries)
    return entries


def _warn_unused_presets(settings: Settings, entries: list[ModelEntry]) -> None:
    for key in settings.presets:
        if find_preset({key: settings.presets[key]}, _all_names(entries)) is None:
            logger.warning("preset %r names no model of the library; it is not used", key)


def _all_names(entries: list[ModelEntry]) -> set[str]:
    names: set[str] = set()
    for entry in entries:
        path = Path(entry.config.model_path)
        names |= {entry.id, *entry.names, path.name, path.stem}
    return names


def memory_budget(settings: Settings) -> int | None:
    """Bytes the loaded models may take in RAM: ``--models-memory`` MiB, else the RAM
    available now (``MemAvailable``) less a margin; None when it cannot be read."""
    if settings.models_memory:
        return settings.models_memory * 2**20
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return max(0, int(line.split()[1]) * 1024 - MEMORY_MARGIN_BYTES)
    except OSError:
        return None
    return None


def vram_budget(settings: Settings, free_vram: int | None) -> int | None:
    """Bytes the loaded models may take on the GPUs: ``--models-vram`` MiB, else the free
    VRAM at start less a margin; None (no check) without a GPU."""
    if free_vram is None:
        return None
    if settings.models_vram:
        return settings.models_vram * 2**20
    return max(0, free_vram - MEMORY_MARGIN_BYTES)


async def free_vram() -> int | None:
    """The GPUs' free memory now (None: no GPU), read off the event loop."""
    from app.engine.llama.vram import probe_free_vram

    return await asyncio.to_thread(probe_free_vram)


async def read_library(settings: Settings, *, has_gpu: bool) -> list[ModelEntry]:
    """Resolve the --model model (may download) and scan the models folder."""
    from app.models.registry import resolve_model

    path = await asyncio.to_thread(resolve_model, settings.model, settings.models_dir)
    library = await asyncio.to_thread(scan_library, settings.models_dir)
    return library_entries(settings, path, library, has_gpu=has_gpu)


async def rescan(router: ModelRouter, settings: Settings) -> tuple[list[str], list[str]]:
    """Read the models folder again (after a pull or delete); (added, removed) ids."""
    entries = await read_library(settings, has_gpu=router.vram_budget_bytes is not None)
    return router.update_entries(entries)
