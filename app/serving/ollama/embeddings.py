"""Ollama's ``/api/embed`` and ``/api/embeddings``: wire request -> engine ``embed`` -> vectors."""

from __future__ import annotations

import time

from app.engine.protocol import Engine
from app.schemas.ollama import (
    OllamaEmbedRequest,
    OllamaEmbedResponse,
    OllamaLegacyEmbedRequest,
    OllamaLegacyEmbedResponse,
)
from app.serving.ollama.chat import ollama_model_name
from app.serving.policy import Limits


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
