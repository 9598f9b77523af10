"""Cheap checks of a model file before llama.cpp sees it.

llama.cpp returns NULL (and logs why) for most bad files, but the messages are on its log
and some failures are easier to explain up front: a missing path, a folder, a file that is
not GGUF at all, or one cut off inside its header.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

from app.engine.errors import ModelLoadError, ModelNotFound

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
# magic (4) + version (u32) + tensor count (u64) + metadata kv count (u64)
GGUF_HEADER_SIZE = 24
SUPPORTED_VERSIONS = (2, 3)


def check_gguf_file(path: str | Path) -> int:
    """Check that ``path`` is a readable GGUF file; return its size in bytes.

    Raises ``ModelNotFound`` when there is no such file and ``ModelLoadError`` when the
    file is not GGUF, of an unknown GGUF version, or too short to hold its header.
    """
    p = Path(path)
    if not p.exists():
        raise ModelNotFound(f"Model file not found: {p}", param="model")
    if not p.is_file():
        raise ModelLoadError(f"Model path is not a file: {p}", param="model")
    size = p.stat().st_size
    try:
        with p.open("rb") as f:
            head = f.read(GGUF_HEADER_SIZE)
    except OSError as exc:
        raise ModelLoadError(f"Cannot read model file {p}: {exc.strerror}", param="model") from exc
    if head[:4] != GGUF_MAGIC:
        raise ModelLoadError(
            f"{p} is not a GGUF model file (it starts with {head[:4]!r}, expected b'GGUF'). "
            "Convert the model to GGUF or pick a .gguf file.",
            param="model",
        )
    if len(head) < GGUF_HEADER_SIZE:
        raise ModelLoadError(
            f"{p} is truncated: {size} bytes, too short for a GGUF header.", param="model"
        )
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:GGUF_HEADER_SIZE])
    if version not in SUPPORTED_VERSIONS:
        raise ModelLoadError(
            f"{p} has GGUF version {version}; this server reads versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}.",
            param="model",
        )
    if n_tensors == 0:
        raise ModelLoadError(f"{p} holds no tensors (a vocabulary-only GGUF?).", param="model")
    logger.debug(
        "%s: GGUF v%d, %d tensors, %d metadata keys, %d bytes", p, version, n_tensors, n_kv, size
    )
    return size
