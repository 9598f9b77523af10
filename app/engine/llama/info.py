"""Build ``ModelInfo`` from a loaded llama model."""

from __future__ import annotations

import logging
from pathlib import Path

from app.engine.llama import _lib
from app.engine.types import EngineConfig, ModelInfo, OffloadInfo

logger = logging.getLogger(__name__)

MAX_META_VALUE_CHARS = 512  # longer values (chat templates, merges) are cut in ``metadata``


def served_name(config: EngineConfig) -> str:
    """The model id clients see: the alias, else the file name without ``.gguf``."""
    if config.model_alias:
        return config.model_alias
    name = Path(config.model_path).name
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def build_model_info(
    model: int,
    config: EngineConfig,
    *,
    n_ctx_slot: int,
    size_bytes: int,
    offload: OffloadInfo,
) -> ModelInfo:
    """Everything /v1/models, health and logs want to say about the model."""
    vocab = _lib.model_vocab(model)
    metadata = _lib.model_metadata(model, MAX_META_VALUE_CHARS)
    ftype = _lib.model_int(model, "ftype")
    return ModelInfo(
        path=str(config.model_path),
        name=served_name(config),
        architecture=metadata.get("general.architecture", ""),
        quantization=_lib.ftype_name(ftype) or f"ftype {ftype}",
        n_params=_lib.model_int(model, "n_params"),
        size_bytes=size_bytes,
        n_ctx_train=_lib.model_int(model, "n_ctx_train"),
        n_ctx_slot=n_ctx_slot,
        n_slots=config.n_slots,
        n_vocab=_lib.vocab_n_tokens(vocab),
        chat_template=config.chat_template or _lib.chat_template(model),
        bos_token=_lib.token_text(vocab, _lib.vocab_bos(vocab)),
        eos_token=_lib.token_text(vocab, _lib.vocab_eos(vocab)),
        description=_lib.model_desc(model),
        metadata=metadata,
        offload=offload,
        adapters=tuple(config.lora),
        system_prompt=config.system_prompt,
    )
