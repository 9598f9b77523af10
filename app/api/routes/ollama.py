"""Ollama's API (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/embeddings``,
``/api/tags``, ``/api/show``, ``/api/ps``, ``/api/version``), so apps and libraries that speak
Ollama work unchanged.

Streams are NDJSON, as Ollama sends them; errors are Ollama's ``{"error": "..."}`` with the
statuses of the shared error table.
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
from app.api.disconnect import json_unless_disconnected
from app.api.ndjson import NdjsonResponse, line
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.engine.protocol import Engine
from app.schemas.ollama import (
    OllamaChatRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaLegacyEmbedRequest,
    OllamaModelRequest,
    OllamaRunning,
    OllamaShow,
    OllamaTags,
    OllamaVersion,
)
from app.serving import ollama_models
from app.serving.embeddings import ollama_embed, ollama_legacy_embed
from app.serving.generation import pieces
from app.serving.ollama import (
    OllamaPlan,
    load_only_line,
    ollama_answer,
    ollama_lines,
    ollama_model_name,
    plan_ollama_chat,
    plan_ollama_generate,
)

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["ollama"])


async def _answer(
    plan: OllamaPlan, stream: bool, request: Request, engine: Engine, request_id: str
) -> Response:
    if plan.request is None:
        return Response(line(load_only_line(plan)), media_type="application/json")
    events = engine.submit(plan.request)
    texts = pieces(engine, request_id, events, usage_recorder(request))
    if stream:
        return NdjsonResponse(ollama_lines(plan, texts))
    return await json_unless_disconnected(request, ollama_answer(plan, texts))


@router.post(
    "/api/chat",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(OllamaChatRequest),
)
async def ollama_chat(
    request: Request, engine: EngineDep, limits: LimitsDep, request_id: RequestIdDep
) -> Response:
    """Chat (Ollama): NDJSON lines unless ``"stream": false``."""
    body = parse_body(OllamaChatRequest, await json_object(request))
    plan = plan_ollama_chat(body, engine.model_info(), limits, request_id)
    return await _answer(plan, body.stream, request, engine, request_id)


@router.post(
    "/api/generate",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(OllamaGenerateRequest),
)
async def ollama_generate(
    request: Request, engine: EngineDep, limits: LimitsDep, request_id: RequestIdDep
) -> Response:
    """Complete a prompt (Ollama): chat template applied unless ``raw``; NDJSON when streamed."""
    body = parse_body(OllamaGenerateRequest, await json_object(request))
    plan = plan_ollama_generate(body, engine.model_info(), limits, request_id)
    return await _answer(plan, body.stream, request, engine, request_id)


@router.post(
    "/api/embed",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(OllamaEmbedRequest),
)
async def ollama_create_embeddings(
    request: Request, engine: EngineDep, limits: LimitsDep
) -> Response:
    """Embed text (Ollama): one vector per input (needs ``--embeddings``)."""
    body = parse_body(OllamaEmbedRequest, await json_object(request))
    return await json_unless_disconnected(request, ollama_embed(engine, body, limits))


@router.post(
    "/api/embeddings",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(OllamaLegacyEmbedRequest),
)
async def ollama_create_embedding(
    request: Request, engine: EngineDep, limits: LimitsDep
) -> Response:
    """Embed one prompt (Ollama's older route; needs ``--embeddings``)."""
    body = parse_body(OllamaLegacyEmbedRequest, await json_object(request))
    return await json_unless_disconnected(request, ollama_legacy_embed(engine, body, limits))


@router.get("/api/tags")
async def ollama_list_models(engine: EngineDep) -> OllamaTags:
    """List the served model (Ollama)."""
    return ollama_models.tags(engine.model_info())


@router.get("/api/ps")
async def ollama_list_running(engine: EngineDep) -> OllamaRunning:
    """List the loaded model (Ollama): always the served one."""
    return ollama_models.running(engine.model_info())


@router.post("/api/show", responses=ERROR_RESPONSES, openapi_extra=json_body(OllamaModelRequest))
async def ollama_show_model(
    request: Request, engine: EngineDep, settings: SettingsDep, limits: LimitsDep
) -> OllamaShow:
    """Describe the served model (Ollama): details, parameters, template, metadata."""
    body = parse_body(OllamaModelRequest, await json_object(request))
    info = engine.model_info()
    ollama_model_name(body.model or body.name or "", info, limits)
    return ollama_models.show(info, embeddings=settings.embeddings)


@router.get("/api/version")
async def ollama_version() -> OllamaVersion:
    """The Ollama API version these routes follow."""
    return ollama_models.version()
