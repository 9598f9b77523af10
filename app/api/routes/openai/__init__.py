"""The OpenAI family: chat and text completions, models and embeddings, with OpenAI's
error body (``{"error": {"message", "type", "param", "code"}}``)."""

from __future__ import annotations

from app.api.family import RouteFamily
from app.api.routes.openai import chat, completions, embeddings, models
from app.schemas.chat import ChatCompletionRequest
from app.schemas.completions import CompletionRequest
from app.schemas.embeddings import EmbeddingRequest

FAMILY = RouteFamily(
    "openai",
    (models.router, chat.router, completions.router, embeddings.router),
    body_models=(ChatCompletionRequest, CompletionRequest, EmbeddingRequest),
)
