"""Anthropic's Messages API (``POST /v1/messages``, ``POST /v1/messages/count_tokens``), so the
``anthropic`` SDKs and Claude Code (``ANTHROPIC_BASE_URL``) work against this server.

Keys work as ``x-api-key`` (or ``Authorization: Bearer``); ``anthropic-version`` and
``anthropic-beta`` are accepted and not checked. Streams are Anthropic's named SSE events
with no ``[DONE]``; errors are Anthropic's ``{"type": "error", "error": {"type", "message"}}``
with the statuses of the shared error table, and the same body as the ``event: error`` that
ends a stream which failed after it started.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Response

from app.api.deps import CallDep
from app.api.family import RouteFamily
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.schemas.anthropic import (
    AnthropicError,
    AnthropicErrorDetail,
    CountTokensRequest,
    CountTokensResponse,
    Message,
    MessagesRequest,
)
from app.schemas.common import ErrorDetail
from app.serving.anthropic.events import message_answer, message_events
from app.serving.anthropic.plan import count_message_tokens, plan_messages

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["anthropic"])

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",  # loading, draining: retry later (Anthropic's 529 means the same)
    529: "overloaded_error",
}

ANTHROPIC_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {**entry, "model": AnthropicError} for status, entry in ERROR_RESPONSES.items()
}


def anthropic_error_type(status: int) -> str:
    """Anthropic's error ``type`` for a status (its SDKs raise a typed error per status)."""
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def anthropic_error(detail: ErrorDetail, status: int) -> AnthropicError:
    """Anthropic's error body (and the data of the ``error`` event ending a failed stream)."""
    kind = anthropic_error_type(status)
    return AnthropicError(error=AnthropicErrorDetail(type=kind, message=detail.message))


@router.post(
    "/v1/messages",
    response_model=Message,
    responses=ANTHROPIC_ERROR_RESPONSES,
    openapi_extra=json_body(MessagesRequest),
)
async def create_message(call: CallDep) -> Response:
    """Create a message (Anthropic): named SSE events when ``stream`` is true."""
    body = await call.body(MessagesRequest)
    engine = await call.model_engine(body.model)
    info = engine.model_info()
    # Rendering the template and counting tokens is CPU work: off the event loop.
    plan, stream = await call.start_planned(
        plan_messages, body, info, call.limits, call.request_id, engine.count_tokens
    )
    if body.stream:
        return call.sse(message_events(plan, stream), headers=plan.headers(), done=None)
    return await call.json(message_answer(plan, stream), headers=plan.headers())


@router.post(
    "/v1/messages/count_tokens",
    response_model=CountTokensResponse,
    responses=ANTHROPIC_ERROR_RESPONSES,
    openapi_extra=json_body(CountTokensRequest),
)
async def count_tokens(call: CallDep) -> CountTokensResponse:
    """Count the tokens a Messages request's prompt takes (Anthropic), without generating."""
    body = await call.body(CountTokensRequest)
    engine = await call.model_engine(body.model)
    info = engine.model_info()
    return await anyio.to_thread.run_sync(
        count_message_tokens, body, info, call.limits, engine.count_tokens
    )


FAMILY = RouteFamily(
    "anthropic",
    (router,),
    body_models=(MessagesRequest, CountTokensRequest),
    error_shape=anthropic_error,
    stream_error_event="error",
)
