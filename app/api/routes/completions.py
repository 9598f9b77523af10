"""``POST /v1/completions``: OpenAI's text completion API."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request, Response

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
from app.schemas.completions import CompletionRequest
from app.serving.completions import completion, completion_chunks, plan_completion
from app.serving.generation import pieces

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["completions"])


@router.post(
    "/v1/completions",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(CompletionRequest),
)
async def create_completion(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    limits: LimitsDep,
    request_id: RequestIdDep,
) -> Response:
    """Create a text completion for a plain prompt."""
    body = parse_body(CompletionRequest, await json_object(request))
    plan = plan_completion(body, engine.model_info(), limits, request_id)
    events = engine.submit(plan.request)
    stream = pieces(engine, request_id, events, usage_recorder(request))
    if body.stream:
        return StreamResponse(completion_chunks(plan, stream), keepalive_s=settings.keepalive_s)
    return await json_unless_disconnected(request, completion(plan, stream))
