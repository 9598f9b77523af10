"""``GET /health`` and ``GET /model-card`` (public), ``GET /metrics`` (behind the API key).

Health never touches the engine thread: it reads the engine's non-blocking snapshots, so
it answers at once even while every slot is generating.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from app.api.deps import EngineDep, RuntimeDep
from app.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from app.api.metrics import HttpMetrics, render_metrics
from app.api.security import require_api_key
from app.engine.errors import EngineNotReady
from app.schemas.cria import Health, ModelCard
from app.serving.models import health as health_body
from app.serving.models import model_card

router = APIRouter(tags=["health"])


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
    offload = None
    if engine is not None and runtime.health().ready:
        try:
            offload = engine.model_info().offload
        except EngineNotReady:
            offload = None
    stats = engine.stats() if engine else None
    body = render_metrics(runtime.health(), stats, http, offload)
    return PlainTextResponse(body, media_type=METRICS_CONTENT_TYPE)
