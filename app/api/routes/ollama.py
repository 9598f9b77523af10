"""Ollama's API (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/embeddings``,
``/api/tags``, ``/api/show``, ``/api/ps``, ``/api/pull``, ``/api/delete``, ``/api/version``),
so apps and libraries that speak Ollama work unchanged.

Streams are NDJSON, as Ollama sends them; errors are Ollama's ``{"error": "..."}`` with the
statuses of the shared error table.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Depends, Response

from app.api.deps import Call, CallDep, RuntimeDep
from app.api.disconnect import CLIENT_CLOSED_REQUEST, ClientGone
from app.api.family import RouteFamily
from app.api.ndjson import line
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.errors import InvalidRequest
from app.schemas.common import ErrorDetail
from app.schemas.ollama import (
    OllamaChatRequest,
    OllamaDeleteRequest,
    OllamaEmbedRequest,
    OllamaError,
    OllamaGenerateRequest,
    OllamaLegacyEmbedRequest,
    OllamaModelRequest,
    OllamaPullRequest,
    OllamaRunning,
    OllamaShow,
    OllamaTags,
    OllamaVersion,
)
from app.serving.ollama import library as ollama_models
from app.serving.ollama.chat import (
    OllamaPlan,
    keep_alive_seconds,
    load_only_line,
    ollama_answer,
    ollama_lines,
    ollama_model_name,
    plan_ollama_chat,
    plan_ollama_generate,
)
from app.serving.ollama.embeddings import ollama_embed, ollama_legacy_embed
from app.serving.ollama.pull import pull_answer, pull_lines, pull_reference
from app.settings import find_preset

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["ollama"])


def ollama_error(detail: ErrorDetail, _: int) -> OllamaError:
    """Ollama's error body (and the last line of a stream that failed): ``{"error": "..."}``."""
    return OllamaError(error=detail.message)


async def _answer(plan: OllamaPlan, stream: bool, call: Call) -> Response:
    if plan.request is None:
        return Response(line(load_only_line(plan)), media_type="application/json")
    texts = await call.start(plan.request)
    if stream:
        return call.ndjson(ollama_lines(plan, texts))
    return await call.json(ollama_answer(plan, texts))


@router.post(
    "/api/chat",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(OllamaChatRequest),
)
async def ollama_chat(call: CallDep) -> Response:
    """Chat (Ollama): NDJSON lines unless ``"stream": false``."""
    body = await call.body(OllamaChatRequest)
    engine = await call.model_engine(body.model, keep_alive_seconds(body.keep_alive))
    info = engine.model_info()
    plan = await call.off_loop(plan_ollama_chat, body, info, call.limits, call.request_id)
    return await _answer(plan, body.stream, call)


@router.post(
    "/api/generate",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(OllamaGenerateRequest),
)
async def ollama_generate(call: CallDep) -> Response:
    """Complete a prompt (Ollama): chat template applied unless ``raw``; NDJSON when streamed."""
    body = await call.body(OllamaGenerateRequest)
    engine = await call.model_engine(body.model, keep_alive_seconds(body.keep_alive))
    info = engine.model_info()
    plan = await call.off_loop(plan_ollama_generate, body, info, call.limits, call.request_id)
    return await _answer(plan, body.stream, call)


@router.post(
    "/api/embed",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(OllamaEmbedRequest),
)
async def ollama_create_embeddings(call: CallDep) -> Response:
    """Embed text (Ollama): one vector per input (needs ``--embeddings``)."""
    body = await call.body(OllamaEmbedRequest)
    await call.model_engine(body.model, keep_alive_seconds(body.keep_alive))
    return await call.json(ollama_embed(call.engine, body, call.limits))


@router.post(
    "/api/embeddings",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(OllamaLegacyEmbedRequest),
)
async def ollama_create_embedding(call: CallDep) -> Response:
    """Embed one prompt (Ollama's older route; needs ``--embeddings``)."""
    body = await call.body(OllamaLegacyEmbedRequest)
    await call.model_engine(body.model, keep_alive_seconds(body.keep_alive))
    return await call.json(ollama_legacy_embed(call.engine, body, call.limits))


@router.get("/api/tags")
async def ollama_list_models(runtime: RuntimeDep) -> OllamaTags:
    """List the models of the library (Ollama)."""
    runtime.check_listing()
    if runtime.router is None:
        return ollama_models.tags(runtime.ready_engine().model_info())
    statuses = runtime.router.status()
    return await asyncio.to_thread(ollama_models.library_tags, statuses)


@router.get("/api/ps")
async def ollama_list_running(runtime: RuntimeDep) -> OllamaRunning:
    """List the loaded models (Ollama), with when each unloads."""
    runtime.check_listing()
    if runtime.router is None:
        return ollama_models.running(runtime.ready_engine().model_info())
    return ollama_models.library_running(runtime.router.status())


@router.post("/api/show", responses=ERROR_RESPONSES, openapi_extra=json_body(OllamaModelRequest))
async def ollama_show_model(call: CallDep, runtime: RuntimeDep) -> OllamaShow:
    """Describe a model (Ollama): details, parameters, template, metadata."""
    body = await call.body(OllamaModelRequest)
    name = body.model or body.name or None
    info = (await call.model_engine(name)).model_info()
    ollama_model_name(name or "", info, call.limits)
    embeddings = call.settings.embeddings
    if runtime.router is not None:  # a preset may turn embeddings on or off for this model
        entry = runtime.router.resolve(name)
        found = find_preset(call.settings.presets, {entry.id, *entry.names, info.path})
        if found is not None and found[1].embeddings is not None:
            embeddings = found[1].embeddings
    return ollama_models.show(info, embeddings=embeddings)


@router.post(
    "/api/pull",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(OllamaPullRequest),
)
async def ollama_pull_model(call: CallDep, runtime: RuntimeDep) -> Response:
    """Fetch a model into the models folder (``hf://owner/repo/file.gguf``, an http(s) URL
    of a .gguf file, or a built-in name); NDJSON progress unless ``"stream": false``. The
    library is read again before ``success``, so the model is then listed and loadable."""
    body = await call.body(OllamaPullRequest)
    ref = pull_reference(body)

    async def rescan(_: Path) -> None:
        await runtime.rescan()

    if body.stream:
        return call.ndjson(pull_lines(ref, call.settings.models_dir, rescan))
    try:
        last = await call.result(pull_answer(ref, call.settings.models_dir, rescan))
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return Response(line(last), media_type="application/json")


@router.delete(
    "/api/delete",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(OllamaDeleteRequest),
)
async def ollama_delete_model(call: CallDep, runtime: RuntimeDep) -> Response:
    """Remove a library model's file (404 for an unknown name). A loaded, idle model is
    unloaded first; the default model, pinned models and busy ones are refused (409)."""
    body = await call.body(OllamaDeleteRequest)
    name = (body.model or body.name or "").strip()
    if not name:
        raise InvalidRequest("Name the model to delete in 'model'.", param="model")
    await runtime.delete_model(name)
    return Response(status_code=200)


@router.get("/api/version")
async def ollama_version() -> OllamaVersion:
    """The Ollama API version these routes follow."""
    return ollama_models.version()


FAMILY = RouteFamily(
    "ollama",
    (router,),
    body_models=(
        OllamaChatRequest,
        OllamaGenerateRequest,
        OllamaModelRequest,
        OllamaEmbedRequest,
        OllamaLegacyEmbedRequest,
        OllamaPullRequest,
        OllamaDeleteRequest,
    ),
    error_shape=ollama_error,
)
