"""Write small, valid GGUF files for tests (and broken ones, by cutting them short)."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

_F32, _Q4_1 = 0, 3
_TYPE_BYTES = {_F32: (1, 4), _Q4_1: (32, 20)}


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _value(value: object) -> tuple[int, bytes]:
    """(GGUF value type, encoded value) for the Python types the tests use."""
    if isinstance(value, bool):
        return 7, struct.pack("<?", value)
    if isinstance(value, int):
        return 4, struct.pack("<I", value)
    if isinstance(value, float):
        return 6, struct.pack("<f", value)
    if isinstance(value, str):
        return 8, _string(value)
    if isinstance(value, list):
        item_type = _value(value[0])[0] if value else 8
        body = b"".join(_value(v)[1] for v in value)
        return 9, struct.pack("<IQ", item_type, len(value)) + body
    raise TypeError(f"unsupported metadata value {value!r}")


def gguf_bytes(
    metadata: Mapping[str, object],
    tensors: Sequence[tuple[str, tuple[int, ...], int]] = (),
    *,
    version: int = 3,
    alignment: int = 32,
) -> bytes:
    """A complete GGUF file: header, metadata, tensor table, aligned zero-filled data."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata))
    for key, value in metadata.items():
        vtype, encoded = _value(value)
        head += _string(key) + struct.pack("<I", vtype) + encoded
    offset, sizes = 0, []
    for name, shape, ggml_type in tensors:
        n = 1
        for dim in shape:
            n *= dim
        per_block, block_bytes = _TYPE_BYTES[ggml_type]
        size = -(-n // per_block) * block_bytes
        head += _string(name) + struct.pack("<I", len(shape))
        head += b"".join(struct.pack("<Q", d) for d in shape)
        head += struct.pack("<IQ", ggml_type, offset)
        sizes.append(size)
        offset += -(-size // alignment) * alignment
    head += b"\0" * (-len(head) % alignment)
    return head + b"\0" * offset


def tiny_llama_metadata(name: str = "Tiny Test Model") -> dict[str, object]:
    """Metadata shaped like a llama GGUF's (file type Q4_1), with a long token list."""
    return {
        "general.architecture": "llama",
        "general.name": name,
        "general.file_type": 3,
        "llama.context_length": 4096,
        "llama.block_count": 2,
        "tokenizer.ggml.tokens": [f"tok{i}" for i in range(200)],
        "tokenizer.chat_template": "{{ messages }}",
        "general.languages": ["en", "fr"],
    }


TINY_TENSORS = [("token_embd.weight", (64, 32), _Q4_1), ("output_norm.weight", (64,), _F32)]


def write_tiny_gguf(path: Path, name: str = "Tiny Test Model") -> Path:
    """A small valid llama-shaped GGUF (not loadable by llama.cpp: weights are zeros)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gguf_bytes(tiny_llama_metadata(name), TINY_TENSORS))
    return path
