"""``/v1/embeddings``: wire request -> engine ``embed`` -> OpenAI's list of embeddings."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Sequence

from app.engine.errors import InvalidRequest
from app.engine.protocol import Engine
from app.schemas.embeddings import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from app.schemas.ollama import (
    OllamaEmbedRequest,
    OllamaEmbedResponse,
    OllamaLegacyEmbedRequest,
    OllamaLegacyEmbedResponse,
)
from app.serving.ollama import ollama_model_name
from app.serving.sampling import Limits, served_model_name


def encode_base64(vector: Sequence[float]) -> str:
    """OpenAI's base64 encoding: the little-endian float32 bytes of the vector."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


async def create_embeddings(
    engine: Engine, body: EmbeddingRequest, limits: Limits
) -> EmbeddingList:
    """Embed every input (one batch on the engine's embeddings thread)."""
    model = served_model_name(body.model, engine.model_info(), limits)
    if body.dimensions is not None:
        raise InvalidRequest(
            "dimensions: this model's embeddings have a fixed size; leave it unset.",
            param="dimensions",
        )
    result = await engine.embed(body.texts())
    data = [
        Embedding(
            index=i,
            embedding=encode_base64(vector) if body.encoding_format == "base64" else list(vector),
        )
        for i, vector in enumerate(result.vectors)
    ]
    usage = EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return EmbeddingList(data=data, model=model, usage=usage)


async def ollama_embed(
    engine: Engine, body: OllamaEmbedRequest, limits: Limits
) -> OllamaEmbedResponse:
    """Ollama's ``/api/embed``: the same vectors as ``/v1/embeddings``."""
    started = time.perf_counter()
    model = ollama_model_name(body.model, engine.model_info(), limits)
    texts = [body.input] if isinstance(body.input, str) else body.input
    result = await engine.embed(texts)
    return OllamaEmbedResponse(
        model=model,
        embeddings=[list(vector) for vector in result.vectors],
        total_duration=int((time.perf_counter() - started) * 1e9),
        prompt_eval_count=result.prompt_tokens,
    )


async def ollama_legacy_embed(
    engine: Engine, body: OllamaLegacyEmbedRequest, limits: Limits
) -> OllamaLegacyEmbedResponse:
    """Ollama's older ``/api/embeddings``: one prompt, one vector."""
    ollama_model_name(body.model, engine.model_info(), limits)
    result = await engine.embed([body.prompt])
    return OllamaLegacyEmbedResponse(embedding=list(result.vectors[0]))
