"""The app factory: routes, error handlers, middleware, and the engine's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api.affinity import SESSION_HEADER
from app.api.errors import install_error_handlers
from app.api.family import FamilyTable, RouteFamily
from app.api.metrics import HttpMetrics
from app.api.middleware import REQUEST_ID_HEADER, BodySizeLimitMiddleware, RequestLogMiddleware
from app.api.openapi import install_openapi
from app.api.routes import anthropic, cria, llama, ollama, openai, responses, tgi
from app.api.runtime import EngineRuntime
from app.api.security import CORS_ALLOWED_HEADERS, BrowserGuardMiddleware, HostPolicy
from app.engine.protocol import Engine
from app.serving.context import DROPPED_MESSAGES_HEADER
from app.serving.responses.store import ResponseStore
from app.settings import Settings
from app.web import routes as web_routes

logger = logging.getLogger(__name__)

FAMILIES: tuple[RouteFamily, ...] = (
    cria.FAMILY,  # /health, /model-card, /metrics and CRIA's chat contract
    openai.FAMILY,
    responses.FAMILY,  # OpenAI's Responses API (/v1/responses)
    anthropic.FAMILY,  # Anthropic's Messages API (/v1/messages)
    llama.FAMILY,
    ollama.FAMILY,
    tgi.FAMILY,
)
"""The route families this server speaks; each is declared in its routes module."""


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the app. Without ``engine``, the lifespan resolves and loads the configured model.

    Loading runs in the background: the app serves /health (503 "loading") meanwhile.
    """
    settings = settings if settings is not None else Settings()
    runtime = EngineRuntime(settings, engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.start_loading()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="cria-server",
        summary="OpenAI-compatible local LLM server",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs else None,  # CDN assets: off unless asked for
        redoc_url="/redoc" if settings.docs else None,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.http_metrics = http_metrics = HttpMetrics()
    app.state.response_store = ResponseStore()  # stored Responses, for previous_response_id
    install_error_handlers(app)
    install_openapi(app, [model for family in FAMILIES for model in family.body_models])
    for family in FAMILIES:
        for router in family.routers:
            app.include_router(router)
    app.state.families = FamilyTable(FAMILIES, app.router.routes)
    app.include_router(web_routes.router)  # the chat page and its assets: public
    # Added innermost first: the request log wraps everything (403s are logged too), the
    # browser guard runs before CORS (a foreign Host gets no preflight answer either), CORS
    # wraps the body cap.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origin,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=CORS_ALLOWED_HEADERS,
        expose_headers=[REQUEST_ID_HEADER, "Retry-After", DROPPED_MESSAGES_HEADER, SESSION_HEADER],
        # Chrome asks before a public page calls a local address; allowed origins may.
        allow_private_network=True,
        max_age=600,
    )
    app.add_middleware(
        BrowserGuardMiddleware,
        hosts=HostPolicy.build(settings.host, settings.allowed_host),
        cors_origins=settings.cors_origin,
    )
    app.add_middleware(RequestLogMiddleware, metrics=http_metrics)
    return app
