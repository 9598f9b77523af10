"""The llama.cpp backend: the only package that imports ``llama_cpp``.

``load_backend(config)`` loads a GGUF model and returns a ``LlamaBackend`` implementing
``app.engine.backend.ModelBackend``. Importing this package is cheap; ``llama_cpp`` is
imported (and its logging routed into Python logging) on first use of ``load_backend``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.engine.types import EngineConfig

if TYPE_CHECKING:
    from app.engine.llama.backend import LlamaBackend
    from app.engine.llama.vocab import LlamaVocabulary

__all__ = ["load_backend", "load_vocabulary"]


def load_backend(config: EngineConfig, *, amx_guard: bool | None = None) -> LlamaBackend:
    """Load ``config.model_path`` and create a context with ``config.n_slots`` sequences.

    Raises ``app.errors.ModelNotFound`` when the file does not exist and
    ``ModelLoadError`` when it cannot be loaded (not GGUF, truncated, corrupt, no memory).
    ``amx_guard``: None decides from the CPU (default); True/False force it.
    """
    from app.engine.llama.loader import load_backend as _load

    return _load(config, amx_guard=amx_guard)


def load_vocabulary(path: str) -> LlamaVocabulary:
    """Load only the tokenizer of the GGUF at ``path`` (no weights, no context)."""
    from app.engine.llama.vocab import load_vocabulary as _load

    return _load(path)
