"""A small pure-Python GGUF header reader.

It reads what the CLI and the model registry need without loading the model: the header
(magic, version, tensor and key/value counts), the metadata key/values, the tensor table,
and it checks that every tensor's data lies inside the file, so a truncated download is
caught here with a clear message instead of crashing llama.cpp later.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little-endian).
"""

from __future__ import annotations

import logging
import math
import mmap
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.engine.errors import ModelLoadError

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_SMALL_ARRAY = 64  # arrays longer than this are summarised, not kept

# GGUF metadata value types -> struct format (scalars only).
_SCALARS: dict[int, str] = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9

# ggml tensor types -> (elements per block, bytes per block), for the data-size check.
_GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1),
    25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}  # fmt: skip

# llama.cpp's LLAMA_FTYPE values (general.file_type) -> the usual quantization name.
_FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE",
}  # fmt: skip

MetaValue = int | float | bool | str | list["MetaValue"]


@dataclass(frozen=True)
class ArraySummary:
    """A long metadata array (token lists, merges): its element type and length only."""

    item_type: int
    length: int

    def __str__(self) -> str:
        return f"[{self.length} items]"


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # relative to the start of the data section

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    def n_bytes(self) -> int | None:
        """Size of the tensor's data, or None for a type this reader does not know."""
        block = _GGML_BLOCKS.get(self.ggml_type)
        if block is None:
            return None
        per_block, block_bytes = block
        return -(-self.n_elements // per_block) * block_bytes


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file says about itself."""

    path: Path
    version: int
    size_bytes: int
    metadata: Mapping[str, MetaValue | ArraySummary]
    tensors: tuple[TensorInfo, ...]
    data_offset: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name", self.path.stem))

    @property
    def quantization(self) -> str:
        ftype = self.metadata.get("general.file_type")
        if isinstance(ftype, int) and not isinstance(ftype, bool):
            return _FILE_TYPES.get(ftype, f"type {ftype}")
        return "unknown"

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None


class _Truncated(Exception):
    """The file ends before the structure it declares."""


class _Cursor:
    """Bounds-checked little-endian reads over a buffer."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated
        self.pos += n

    def unpack(self, fmt: str) -> int | float | bool:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise _Truncated
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value  # type: ignore[no-any-return]  # struct returns Any

    def u32(self) -> int:
        return int(self.unpack("<I"))

    def u64(self) -> int:
        return int(self.unpack("<Q"))

    def string(self) -> str:
        return self.take(self.u64()).decode("utf-8", errors="replace")


def _read_value(cur: _Cursor, vtype: int) -> MetaValue | ArraySummary:
    if vtype in _SCALARS:
        return cur.unpack(_SCALARS[vtype])
    if vtype == _STRING:
        return cur.string()
    if vtype == _ARRAY:
        item_type, length = cur.u32(), cur.u64()
        if length > cur.size:  # every element takes at least one byte
            raise _Truncated
        if length > MAX_SMALL_ARRAY:
            _skip_array(cur, item_type, length)
            return ArraySummary(item_type, length)
        items = [_read_value(cur, item_type) for _ in range(length)]
        return [i for i in items if not isinstance(i, ArraySummary)]
    raise ModelLoadError(f"unknown GGUF metadata value type {vtype}")


def _skip_array(cur: _Cursor, item_type: int, length: int) -> None:
    if item_type in _SCALARS:
        cur.skip(struct.calcsize(_SCALARS[item_type]) * length)
    elif item_type == _STRING:
        for _ in range(length):
            cur.skip(cur.u64())
    else:
        for _ in range(length):
            _read_value(cur, item_type)


def _read_tensor(cur: _Cursor) -> TensorInfo:
    name = cur.string()
    n_dims = cur.u32()
    if n_dims > 8:
        raise ModelLoadError(f"tensor {name!r} has {n_dims} dimensions (corrupt file?)")
    shape = tuple(cur.u64() for _ in range(n_dims))
    return TensorInfo(name=name, shape=shape, ggml_type=cur.u32(), offset=cur.u64())


def _check_data(path: Path, tensors: tuple[TensorInfo, ...], data_offset: int, size: int) -> None:
    """Every tensor's bytes must lie inside the file: this is what catches truncation."""
    end = data_offset
    for tensor in tensors:
        n_bytes = tensor.n_bytes() or 0
        end = max(end, data_offset + tensor.offset + n_bytes)
    if end > size:
        raise ModelLoadError(
            f"{path} is truncated: its tensors need {end} bytes but the file has {size}. "
            "The download was probably interrupted; delete the file and fetch it again."
        )


def _parse(path: Path, buf: mmap.mmap) -> GGUFInfo:
    cur = _Cursor(buf)
    if cur.take(4) != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF model file (wrong magic bytes).")
    version = cur.u32()
    if version not in SUPPORTED_VERSIONS:
        raise ModelLoadError(f"{path} uses GGUF version {version}; supported: 2 and 3.")
    n_tensors, n_kv = cur.u64(), cur.u64()
    if n_tensors > cur.size or n_kv > cur.size:
        raise ModelLoadError(f"{path} has an impossible header (corrupt file).")
    metadata: dict[str, MetaValue | ArraySummary] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = _read_value(cur, cur.u32())
    tensors = tuple(_read_tensor(cur) for _ in range(n_tensors))
    align = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0:
        raise ModelLoadError(f"{path} has an invalid general.alignment {align!r}.")
    data_offset = -(-cur.pos // align) * align
    _check_data(path, tensors, data_offset, cur.size)
    return GGUFInfo(path, version, cur.size, metadata, tensors, data_offset)


def read_gguf(path: Path) -> GGUFInfo:
    """Read and validate a GGUF file's header, metadata and tensor table.

    Raises ``ModelLoadError`` with a plain message when the file is not GGUF, is truncated
    or is corrupt (impossible counts or sizes). Reads only the header pages (memory-mapped).
    """
    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not a .gguf model file.")
    try:
        with path.open("rb") as fh:
            if path.stat().st_size < 24:
                raise ModelLoadError(
                    f"{path} is not a GGUF model file (only {path.stat().st_size} bytes)."
                )
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, buf)
    except _Truncated:
        raise ModelLoadError(
            f"{path} is truncated or corrupt: its header ends early. "
            "Delete the file and fetch it again."
        ) from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
