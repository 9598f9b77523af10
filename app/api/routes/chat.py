"""``POST /{segment}/chat/completions``: OpenAI's chat API and CRIA's frontend contract.

OpenAI bodies are served on ``/v{N}/chat/completions`` (``/v1``, ``/v2``...). CRIA's
``{"prompt"}`` body is served under any single path segment, because CRIA's models are
versioned like ``v1.3`` and its frontend puts that version in the path.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.exceptions import HTTPException

from app.api.deps import (
    EngineDep,
    LimitsDep,
    RequestIdDep,
    SettingsDep,
    json_object,
    parse_body,
    usage_recorder,
)
from app.api.disconnect import json_unless_disconnected
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.api.sse import StreamResponse
from app.engine.protocol import Engine
from app.schemas.chat import ChatCompletionRequest
from app.schemas.cria import CriaPromptRequest
from app.serving.chat import chat_chunks, chat_completion, plan_chat
from app.serving.cria import cria_pieces, plan_cria
from app.serving.generation import pieces
from app.serving.sampling import Limits
from app.settings import Settings

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["chat"])

API_VERSION = re.compile(r"v[0-9]+")


def is_cria_body(body: dict[str, Any]) -> bool:
    """CRIA's frontend sends ``{"prompt": ...}`` and no ``messages``."""
    return "prompt" in body and "messages" not in body


@router.post(
    "/{api_version}/chat/completions",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(ChatCompletionRequest, CriaPromptRequest),
)
async def create_chat_completion(
    api_version: str,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    limits: LimitsDep,
    request_id: RequestIdDep,
) -> Response:
    """Create a chat completion (OpenAI), or stream raw text for CRIA's ``{"prompt"}`` body."""
    body = await json_object(request)
    if is_cria_body(body):
        return _cria_stream(body, request, engine, settings, limits, request_id)
    if not API_VERSION.fullmatch(api_version):
        raise HTTPException(404, "Not Found: OpenAI chat requests go to /v1/chat/completions.")
    chat = parse_body(ChatCompletionRequest, body)
    plan = plan_chat(chat, engine.model_info(), limits, request_id, engine.count_tokens)
    events = engine.submit(plan.request)
    stream = pieces(engine, request_id, events, usage_recorder(request))
    if chat.stream:
        return StreamResponse(
            chat_chunks(plan, stream), keepalive_s=settings.keepalive_s, headers=plan.headers()
        )
    response = await json_unless_disconnected(request, chat_completion(plan, stream))
    response.headers.update(plan.headers())
    return response


def _cria_stream(
    body: dict[str, Any],
    request: Request,
    engine: Engine,
    settings: Settings,
    limits: Limits,
    request_id: str,
) -> Response:
    prompt = parse_body(CriaPromptRequest, body)
    generation = plan_cria(prompt, engine.model_info(), limits, request_id)
    events = engine.submit(generation)
    stream = pieces(engine, request_id, events, usage_recorder(request))
    return StreamResponse(cria_pieces(stream), keepalive_s=settings.keepalive_s)
