"""The llama-server family: llama.cpp server's own routes, ``POST /tokenize``,
``POST /detokenize`` (chats counted too) and ``POST /apply-template``, with OpenAI's error
body as llama-server answers."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import CallDep
from app.api.family import RouteFamily
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.schemas.chat import ChatCompletionRequest
from app.schemas.tokenize import (
    ApplyTemplateResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from app.serving.llama import tokenize as serving
from app.serving.llama.template import apply_template

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["tokens"])


@router.post("/tokenize", responses=ERROR_RESPONSES, openapi_extra=json_body(TokenizeRequest))
async def create_tokenize(call: CallDep) -> TokenizeResponse:
    """Tokenize text (``content``) or count a chat's prompt tokens (``messages``)."""
    body = await call.body(TokenizeRequest)
    return serving.tokenize(call.engine, body, call.limits)


@router.post("/detokenize", responses=ERROR_RESPONSES, openapi_extra=json_body(DetokenizeRequest))
async def create_detokenize(call: CallDep) -> DetokenizeResponse:
    """Turn token ids back into text."""
    body = await call.body(DetokenizeRequest)
    return serving.detokenize(call.engine, body, call.limits)


@router.post(
    "/apply-template", responses=ERROR_RESPONSES, openapi_extra=json_body(ChatCompletionRequest)
)
async def create_apply_template(call: CallDep) -> ApplyTemplateResponse:
    """Render a chat body with the model's chat template (nothing is generated)."""
    body = await call.body(ChatCompletionRequest)
    return apply_template(body, call.engine.model_info(), call.limits)


FAMILY = RouteFamily(
    "llama",
    (router,),
    body_models=(TokenizeRequest, DetokenizeRequest, ChatCompletionRequest),
)
