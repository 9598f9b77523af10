"""``/v1/embeddings``: wire request -> engine ``embed`` -> OpenAI's list of embeddings."""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence

from app.engine.protocol import Engine
from app.errors import InvalidRequest
from app.schemas.embeddings import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from app.serving.policy import Limits, served_model_name


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
