"""Text Generation Inference's routes (``/generate``, ``/generate_stream``, ``/``, ``/info``), so
``huggingface_hub.InferenceClient(url).text_generation`` and TGI clients work unchanged.

Streams are TGI's SSE token events (no ``[DONE]``); errors are TGI's
``{"error", "error_type"}`` with the statuses of the shared error table.
"""

from __future__ import annotations

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
from app.api.disconnect import CLIENT_CLOSED_REQUEST, ClientGone, unless_disconnected
from app.api.errors import error_body, spec_for, tgi_error_type
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.api.sse import StreamResponse
from app.schemas.tgi import TgiError, TgiGenerateRequest, TgiGenerateResponse, TgiInfo
from app.serving.tgi import plan_tgi, tgi_answer, tgi_info, tgi_stream_events, tgi_tokens

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["tgi"])


def tgi_error_data(exc: BaseException) -> str:
    """The last SSE event of a TGI stream that failed."""
    error = TgiError(
        error=error_body(exc).error.message, error_type=tgi_error_type(spec_for(exc).status)
    )
    return error.model_dump_json()


async def _generate(
    request: Request,
    engine: EngineDep,
    limits: LimitsDep,
    request_id: str,
    *,
    stream: bool | None,
    keepalive_s: float,
    as_list: bool = False,
) -> Response:
    body = parse_body(TgiGenerateRequest, await json_object(request))
    plan = plan_tgi(body, engine.model_info(), limits, request_id)
    events = engine.submit(plan.request)
    tokens = tgi_tokens(engine, request_id, events, usage_recorder(request))
    if body.stream if stream is None else stream:
        return StreamResponse(
            tgi_stream_events(plan, tokens),
            keepalive_s=keepalive_s,
            done=None,
            error_data=tgi_error_data,
        )
    try:
        answer = await unless_disconnected(request, tgi_answer(plan, tokens))
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    data = answer.model_dump_json()
    return Response(f"[{data}]" if as_list else data, media_type="application/json")


@router.post(
    "/generate",
    response_model=TgiGenerateResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(TgiGenerateRequest),
)
async def tgi_generate(
    request: Request,
    engine: EngineDep,
    limits: LimitsDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
) -> Response:
    """Generate text for ``inputs`` (TGI), with token ``details`` when asked."""
    return await _generate(
        request, engine, limits, request_id, stream=False, keepalive_s=settings.keepalive_s
    )


@router.post(
    "/generate_stream",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(TgiGenerateRequest),
)
async def tgi_generate_stream(
    request: Request,
    engine: EngineDep,
    limits: LimitsDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
) -> Response:
    """Stream TGI token events for ``inputs``; the last carries the text and details."""
    return await _generate(
        request, engine, limits, request_id, stream=True, keepalive_s=settings.keepalive_s
    )


@router.post(
    "/",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(TgiGenerateRequest),
)
async def tgi_compat_generate(
    request: Request,
    engine: EngineDep,
    limits: LimitsDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
) -> Response:
    """TGI's root route: a list of one answer, or token events when ``stream`` is true."""
    return await _generate(
        request,
        engine,
        limits,
        request_id,
        stream=None,
        keepalive_s=settings.keepalive_s,
        as_list=True,
    )


@router.get("/info")
async def tgi_get_info(engine: EngineDep, settings: SettingsDep) -> TgiInfo:
    """The served model and its limits, in TGI's shape."""
    return tgi_info(engine.model_info(), max_queue=settings.max_queue)
