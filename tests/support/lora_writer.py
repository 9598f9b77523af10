"""Write GGUF LoRA adapters for a base model, laid out as llama.cpp's convert_lora_to_gguf.py does.

The converter writes ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha`` (float32) and ``general.architecture`` (the base's), then one pair of
tensors per adapted weight: ``<base tensor name>.lora_a`` and ``.lora_b``. In ggml order (ne0
first) a base weight is ``[n_in, n_out]``; ``lora_a`` is ``[n_in, rank]`` and ``lora_b`` is
``[rank, n_out]`` (numpy arrays are the reverse: ``(rank, n_in)`` and ``(n_out, rank)``).
llama.cpp computes ``W x + scale * alpha / rank * B (A x)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np

from app.models.gguf import read_gguf

ATTENTION = ("attn_q", "attn_k", "attn_v", "attn_output")


def write_lora(
    path: Path,
    base: Path,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    magnitude: float = 0.05,
    seed: int = 0,
    zero: bool = False,
    projections: Sequence[str] = ATTENTION,
    architecture: str | None = None,
    wrong_shape: bool = False,
) -> Path:
    """A rank-``rank`` adapter on ``projections`` of every layer of ``base``; returns ``path``.

    ``zero`` writes B = 0 (the adapter changes nothing, as a freshly initialised PEFT LoRA).
    ``architecture`` overrides the base's; ``wrong_shape`` makes every A one column too wide.
    """
    info = read_gguf(base)
    arch = architecture or info.architecture
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(f"test-lora-{seed}")
    targets = tuple(f".{p}.weight" for p in projections)
    for tensor in info.tensors:
        if not tensor.name.endswith(targets):
            continue
        n_in, n_out = tensor.shape[0], tensor.shape[1]
        a = rng.standard_normal((rank, n_in + int(wrong_shape))).astype(np.float32) * magnitude
        b = np.zeros((n_out, rank), np.float32)
        if not zero:
            b = rng.standard_normal((n_out, rank)).astype(np.float32) * magnitude
        stem = tensor.name
        writer.add_tensor(f"{stem}.lora_a", a)
        writer.add_tensor(f"{stem}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
