"""``POST /v1/embeddings``: OpenAI's embeddings API (needs ``--embeddings``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from app.api.deps import CallDep
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.schemas.embeddings import EmbeddingList, EmbeddingRequest
from app.serving.openai.embeddings import create_embeddings as embed

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["embeddings"])


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingList,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(EmbeddingRequest),
)
async def create_embeddings(call: CallDep) -> Response:
    """Embed text (OpenAI): pooled, normalised vectors from the served model."""
    body = await call.body(EmbeddingRequest)
    await call.model_engine(body.model)
    return await call.json(embed(call.engine, body, call.limits))
