"""Text Generation Inference's routes (``/generate``, ``/generate_stream``, ``/``, ``/info``), so
``huggingface_hub.InferenceClient(url).text_generation`` and TGI clients work unchanged.

Streams are TGI's SSE token events (no ``[DONE]``); errors are TGI's
``{"error", "error_type"}`` with the statuses of the shared error table.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from app.api.deps import Call, CallDep, EngineDep, SettingsDep, usage_recorder
from app.api.disconnect import CLIENT_CLOSED_REQUEST, ClientGone
from app.api.family import RouteFamily
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.schemas.common import ErrorDetail
from app.schemas.tgi import TgiError, TgiGenerateRequest, TgiGenerateResponse, TgiInfo
from app.serving.tgi.generate import plan_tgi, tgi_answer, tgi_info, tgi_stream_events, tgi_tokens

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["tgi"])


def tgi_error_type(status: int) -> str:
    """TGI's ``error_type`` for a status (huggingface_hub raises a typed error for each)."""
    if status == 429:
        return "overloaded"
    if status < 500:
        return "validation"
    return "unhealthy" if status == 503 else "generation"


def tgi_error(detail: ErrorDetail, status: int) -> TgiError:
    """TGI's error body (and the last event of a stream that failed)."""
    return TgiError(error=detail.message, error_type=tgi_error_type(status))


async def _generate(call: Call, *, stream: bool | None, as_list: bool = False) -> Response:
    body = await call.body(TgiGenerateRequest)
    plan = await call.off_loop(
        plan_tgi, body, call.engine.model_info(), call.limits, call.request_id
    )
    tokens = tgi_tokens(await call.start_events(plan.request), usage_recorder(call.request))
    if body.stream if stream is None else stream:
        return call.sse(tgi_stream_events(plan, tokens), done=None)
    try:
        answer = await call.result(tgi_answer(plan, tokens))
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
async def tgi_generate(call: CallDep) -> Response:
    """Generate text for ``inputs`` (TGI), with token ``details`` when asked."""
    return await _generate(call, stream=False)


@router.post(
    "/generate_stream",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(TgiGenerateRequest),
)
async def tgi_generate_stream(call: CallDep) -> Response:
    """Stream TGI token events for ``inputs``; the last carries the text and details."""
    return await _generate(call, stream=True)


@router.post(
    "/",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(TgiGenerateRequest),
)
async def tgi_compat_generate(call: CallDep) -> Response:
    """TGI's root route: a list of one answer, or token events when ``stream`` is true."""
    return await _generate(call, stream=None, as_list=True)


@router.get("/info")
async def tgi_get_info(engine: EngineDep, settings: SettingsDep) -> TgiInfo:
    """The served model and its limits, in TGI's shape."""
    return tgi_info(engine.model_info(), max_queue=settings.max_queue)


FAMILY = RouteFamily("tgi", (router,), body_models=(TgiGenerateRequest,), error_shape=tgi_error)
