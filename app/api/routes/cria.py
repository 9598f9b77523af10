"""The CRIA family: CRIA's frontend contract, ``GET /health`` and ``GET /model-card`` (public),
``GET /metrics`` (behind the API key). Errors use OpenAI's body, as CRIA's frontend reads it.

CRIA's frontend posts ``{"prompt": ...}`` (often as text/plain) to
``/{version}/chat/completions`` and reads raw text events: ``v1`` goes through the OpenAI
chat route (which hands this body here), and CRIA's own model versions (``v1.3``) come to
the route below; a version that names a LoRA adapter (``--lora v1.3=...``) runs on it.
Health never touches the engine thread: it reads the engine's non-blocking snapshots, so
it answers at once even while every slot is generating.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException

from app.api.deps import Call, CallDep, EngineDep, RuntimeDep, json_object, parse_body
from app.api.family import RouteFamily
from app.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from app.api.metrics import HttpMetrics, render_metrics
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.engine.types import LoraAdapter, OffloadInfo
from app.errors import EngineError, EngineNotReady
from app.schemas.cria import CriaPromptRequest, Health, ModelCard
from app.serving.cria.health import health as health_body
from app.serving.cria.health import model_card, model_health
from app.serving.cria.prompt import cria_pieces, plan_cria

router = APIRouter(tags=["health"])
chat_router = APIRouter(dependencies=[Depends(require_api_key)], tags=["chat"])


def is_cria_body(body: dict[str, Any]) -> bool:
    """CRIA's frontend sends ``{"prompt": ...}`` and no ``messages``."""
    return "prompt" in body and "messages" not in body


async def create_cria_completion(
    body: dict[str, Any], call: Call, version: str | None = None
) -> Response:
    """Stream the raw text of a reply to CRIA's ``{"prompt"}`` body (on the LoRA adapter that
    ``version`` names, if one does)."""
    prompt = parse_body(CriaPromptRequest, body)
    info = call.engine.model_info()
    generation = await call.off_loop(plan_cria, prompt, info, call.limits, call.request_id, version)
    return call.sse(cria_pieces(await call.start(generation)))


class CriaVersionConvertor(Convertor[str]):
    """A path segment that names a CRIA model version (``v1.3``), not an OpenAI API version
    (``v1``, which the OpenAI chat route serves)."""

    regex = "(?!v[0-9]+/)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("cria_version", CriaVersionConvertor())


@chat_router.post(
    "/{version:cria_version}/chat/completions",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(CriaPromptRequest),
)
async def create_versioned_chat_completion(version: str, call: CallDep) -> Response:
    """Stream raw text for CRIA's ``{"prompt"}`` body on a CRIA model version's path."""
    body = await json_object(call.request)
    if not is_cria_body(body):
        raise HTTPException(404, "Not Found: OpenAI chat requests go to /v1/chat/completions.")
    # A CRIA version may name a library model or a LoRA adapter on one (v1.3).
    await call.model_engine(version)
    return await create_cria_completion(body, call, version)


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(runtime: RuntimeDep) -> JSONResponse:
    """Whether the server takes requests: 200 when ready; 503 while loading, draining or dead."""
    state = runtime.health()
    engine = runtime.engine
    stats = info = None
    if engine is not None:
        stats = engine.stats()
        if state.ready:
            try:
                info = engine.model_info()
            except EngineNotReady:
                info = None
    body = health_body(state, stats, info)
    if runtime.router is not None:
        body.models = model_health(runtime.router.status())
    if runtime.draining:  # load balancers stop routing here; running requests still finish
        body.status, body.reason = "draining", "the server is shutting down"
    ready = state.ready and not runtime.draining
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/model-card")
async def get_model_card(engine: EngineDep) -> ModelCard:
    """CRIA's model card: name, version, description, language, and where the model runs."""
    return model_card(engine.model_info())


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    dependencies=[Depends(require_api_key)],
    tags=["metrics"],
)
async def get_metrics(runtime: RuntimeDep, request: Request) -> PlainTextResponse:
    """Prometheus metrics: engine state, slots, queue, KV cells, tokens, offload, HTTP."""
    engine = runtime.engine
    http: HttpMetrics = request.app.state.http_metrics
    offload: OffloadInfo | None = None
    adapters: tuple[LoraAdapter, ...] = ()
    if engine is not None and runtime.health().ready:
        try:
            info = engine.model_info()
            offload = info.offload
            # Current scales (POST /lora-adapters changes them); a worker call, so only when
            # the model has adapters at all.
            adapters = await engine.lora_adapters() if info.adapters else ()
        except EngineError:  # loading, or the worker is restarting: no model facts now
            offload, adapters = None, ()
    stats = engine.stats() if engine else None
    # Rendered in a worker thread: the scrape grows with the label sets, and the event loop
    # serves every stream meanwhile.
    models = runtime.router.status() if runtime.router is not None else []
    body = await asyncio.to_thread(
        render_metrics, runtime.health(), stats, http, offload, adapters, models
    )
    return PlainTextResponse(body, media_type=METRICS_CONTENT_TYPE)


FAMILY = RouteFamily("cria", (router, chat_router), body_models=(CriaPromptRequest,))
