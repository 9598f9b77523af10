"""Loading GGUF LoRA adapters onto the base model, with checks llama.cpp does not make.

llama.cpp's ``llama_adapter_lora_init`` already refuses a file whose ``general.type`` is not
``adapter``, whose ``adapter.type`` is not ``lora``, whose architecture is not the model's, a
tensor the base model lacks, an A/B pair with a missing half or shapes that do not fit the
base tensor (its log names the tensor). It accepts, silently, an adapter with no tensors at
all (a no-op that would be served as a "fine-tune") and an activated LoRA (aLoRA, which
needs invocation tokens this server does not look for). Those are refused here, and every
refusal is a ``ModelLoadError`` that names the adapter and its file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gguf

from app.engine.llama import _lib
from app.engine.types import LoraAdapter
from app.errors import ModelLoadError

logger = logging.getLogger(__name__)

ALORA_KEY = "adapter.alora.invocation_tokens"


def _fail(adapter: LoraAdapter, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"LoRA adapter '{adapter.name}' ({adapter.path}) cannot be used: {why}.", param="lora"
    )


def _read(adapter: LoraAdapter) -> tuple[dict[str, Any], set[str]]:
    """The adapter file's scalar metadata and tensor names (gguf's reader, memory-mapped)."""
    try:
        reader = gguf.GGUFReader(adapter.path)
        meta: dict[str, Any] = {}
        for name, field in reader.fields.items():
            if field.types and field.types[0] != gguf.GGUFValueType.ARRAY:
                meta[name] = field.contents()
            elif field.types:
                meta[name] = "[array]"
        return meta, {str(t.name) for t in reader.tensors}
    except FileNotFoundError as exc:
        raise _fail(adapter, "the file does not exist") from exc
    except OSError as exc:
        raise _fail(adapter, f"the file cannot be read ({exc.strerror or exc})") from exc
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as exc:
        raise _fail(adapter, f"it is not a readable GGUF file ({type(exc).__name__})") from exc


def check_adapter_file(adapter: LoraAdapter, architecture: str) -> None:
    """Check ``adapter``'s GGUF header against the base model's ``architecture``."""
    meta, names = _read(adapter)
    kind, adapter_type = meta.get("general.type"), meta.get("adapter.type")
    if kind != "adapter" or adapter_type != "lora":
        raise _fail(
            adapter,
            f"it is not a LoRA adapter (general.type={kind!r}, adapter.type={adapter_type!r}); "
            "convert it with llama.cpp's convert_lora_to_gguf.py",
        )
    made_for = meta.get("general.architecture")
    if made_for != architecture:
        raise _fail(
            adapter, f"it was made for a '{made_for}' model and the base model is '{architecture}'"
        )
    if ALORA_KEY in meta:
        raise _fail(adapter, "activated LoRA (aLoRA) adapters are not supported")
    pairs = [n for n in names if n.endswith(".lora_a") and n[:-1] + "b" in names]
    if not pairs:
        raise _fail(adapter, "it holds no lora_a/lora_b tensor pairs (an empty adapter)")


def _native_detail() -> str:
    lines = _lib.take_native_problems()
    return " / ".join(lines[-3:]) if lines else "see the debug log"


def load_adapters(
    model: int, adapters: Sequence[LoraAdapter], *, architecture: str, base_name: str
) -> list[_lib.AdapterHandle]:
    """Load every adapter onto ``model`` (in id order); they are freed with the model."""
    handles: list[_lib.AdapterHandle] = []
    seen: set[str] = set()
    for adapter in adapters:
        key = adapter.name.lower()
        if key in seen or key == base_name.lower():
            raise _fail(adapter, "its name is already the name of another model on this server")
        seen.add(key)
        check_adapter_file(adapter, architecture)
        _lib.take_native_problems()
        handle = _lib.adapter_lora_init(model, adapter.path)
        if handle is None:
            raise _fail(adapter, f"llama.cpp refused it ({_native_detail()})")
        meta = _lib.adapter_meta(handle)
        logger.info(
            "LoRA adapter '%s' loaded from %s (alpha %s, scale %g)",
            adapter.name,
            adapter.path,
            meta.get("adapter.lora.alpha", "?"),
            adapter.scale,
        )
        handles.append(handle)
    return handles
