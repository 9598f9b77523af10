"""``POST /tokenize`` and ``POST /detokenize`` (llama-server's shapes; chats counted too)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.api.deps import EngineDep, LimitsDep, json_object, parse_body
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.schemas.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from app.serving import tokenize as serving

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["tokens"])


@router.post("/tokenize", responses=ERROR_RESPONSES, openapi_extra=json_body(TokenizeRequest))
async def create_tokenize(
    request: Request, engine: EngineDep, limits: LimitsDep
) -> TokenizeResponse:
    """Tokenize text (``content``) or count a chat's prompt tokens (``messages``)."""
    body = parse_body(TokenizeRequest, await json_object(request))
    return serving.tokenize(engine, body, limits)


@router.post("/detokenize", responses=ERROR_RESPONSES, openapi_extra=json_body(DetokenizeRequest))
async def create_detokenize(
    request: Request, engine: EngineDep, limits: LimitsDep
) -> DetokenizeResponse:
    """Turn token ids back into text."""
    body = parse_body(DetokenizeRequest, await json_object(request))
    return serving.detokenize(engine, body, limits)
