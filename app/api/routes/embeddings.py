"""``POST /v1/embeddings``: OpenAI's embeddings API (needs ``--embeddings``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from app.api.deps import EngineDep, LimitsDep, json_object, parse_body
from app.api.disconnect import json_unless_disconnected
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.schemas.embeddings import EmbeddingList, EmbeddingRequest
from app.serving.embeddings import create_embeddings as embed

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["embeddings"])


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingList,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(EmbeddingRequest),
)
async def create_embeddings(request: Request, engine: EngineDep, limits: LimitsDep) -> Response:
    """Embed text (OpenAI): pooled, normalised vectors from the served model."""
    body = parse_body(EmbeddingRequest, await json_object(request))
    return await json_unless_disconnected(request, embed(engine, body, limits))
