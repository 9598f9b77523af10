"""The model library: every GGUF in the models folder (and its sub-folders), plus the model
``--model`` names wherever it lives, each with its names and a memory estimate.

Facts come from the GGUF header and metadata only (nothing is loaded). The memory estimate
is the file's size (the weights) plus the KV cache of the slot configuration it would run
with: ``layers x cells x (K + V width) x bytes per element`` - what llama.cpp allocates for
a unified f16/q8 cache, without compute buffers, so it is a lower bound that is close for
small contexts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from app.models.builtin import BUILTIN_MODELS
from app.models.gguf import GGUFInfo
from app.models.registry import list_models

logger = logging.getLogger(__name__)

KV_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


@dataclass(frozen=True)
class LibraryModel:
    """One model file of the library."""

    id: str  # the path below the models folder without ``.gguf`` (or the --model file's stem)
    path: Path
    names: frozenset[str]  # more names that select it: file name, built-in names
    size_bytes: int
    info: GGUFInfo


def kv_bytes(info: GGUFInfo, cells: int, kv_cache_type: str = "f16") -> int:
    """Bytes of a KV cache of ``cells`` cells for this model (0 when the metadata lacks
    the shapes)."""
    arch = info.architecture
    meta = info.metadata

    def number(key: str) -> int | None:
        value = meta.get(f"{arch}.{key}")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    layers = number("block_count")
    width = number("embedding_length")
    heads = number("attention.head_count")
    kv_heads = number("attention.head_count_kv") or heads
    if not (layers and width and heads and kv_heads):
        return 0
    head_k = number("attention.key_length") or width // heads
    head_v = number("attention.value_length") or width // heads
    per_cell = layers * kv_heads * (head_k + head_v)
    return int(per_cell * cells * KV_BYTES.get(kv_cache_type, 2.0))


def builtin_names(path: Path) -> frozenset[str]:
    """Built-in model names whose file is ``path``'s file."""
    return frozenset(name for name, spec in BUILTIN_MODELS.items() if spec.filename == path.name)


def scan_library(models_dir: Path) -> list[LibraryModel]:
    """Every readable GGUF model under ``models_dir`` (vocabulary-only and broken files and
    LoRA adapters are left out, with a log line)."""
    found = []
    for local in list_models(models_dir):
        if local.info is None:
            logger.warning("library: %s is left out: %s", local.path, local.error)
            continue
        if local.info.metadata.get("general.type") == "adapter":
            continue
        if not local.info.tensors:
            logger.warning("library: %s holds no tensors; left out", local.path)
            continue
        names = frozenset({local.path.name, local.path.stem}) | builtin_names(local.path)
        found.append(LibraryModel(local.name, local.path, names, local.size_bytes, local.info))
    return found
