"""The llama-server family: llama.cpp server's own routes, ``POST /tokenize``,
``POST /detokenize`` (chats counted too), ``POST /apply-template``, ``POST /models/load``
and ``POST /models/unload`` (its router mode's), and ``GET``/``POST /lora-adapters``, with
OpenAI's error body as llama-server
answers."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import Call, CallDep, get_runtime, json_value
from app.api.family import RouteFamily
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.engine.router import ModelRouter
from app.errors import EngineNotReady
from app.schemas.chat import ChatCompletionRequest
from app.schemas.lora import LoraAdapterInfo, LoraEntry, LoraScaleResult
from app.schemas.models import ModelLoadResponse, ModelRequest
from app.schemas.tokenize import (
    ApplyTemplateResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from app.serving.llama import lora as lora_serving
from app.serving.llama import tokenize as serving
from app.serving.llama.template import apply_template

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["tokens"])
models_router = APIRouter(dependencies=[Depends(require_api_key)], tags=["models"])


@router.post("/tokenize", responses=ERROR_RESPONSES, openapi_extra=json_body(TokenizeRequest))
async def create_tokenize(call: CallDep) -> TokenizeResponse:
    """Tokenize text (``content``) or count a chat's prompt tokens (``messages``)."""
    body = await call.body(TokenizeRequest)
    return await call.off_loop(serving.tokenize, call.engine, body, call.limits)


@router.post("/detokenize", responses=ERROR_RESPONSES, openapi_extra=json_body(DetokenizeRequest))
async def create_detokenize(call: CallDep) -> DetokenizeResponse:
    """Turn token ids back into text."""
    body = await call.body(DetokenizeRequest)
    return serving.detokenize(call.engine, body, call.limits)


@router.post(
    "/apply-template", responses=ERROR_RESPONSES, openapi_extra=json_body(ChatCompletionRequest)
)
async def create_apply_template(call: CallDep) -> ApplyTemplateResponse:
    """Render a chat body with the model's chat template (nothing is generated)."""
    body = await call.body(ChatCompletionRequest)
    engine = await call.model_engine(body.model)
    return apply_template(body, engine.model_info(), call.limits)


# ---- the model router (llama-server's router mode names these routes)


@models_router.post(
    "/models/load", responses=ERROR_RESPONSES, openapi_extra=json_body(ModelRequest)
)
async def load_model(call: CallDep) -> ModelLoadResponse:
    """Load a model of the library now (it stays until unloaded, idle or evicted)."""
    body = await call.body(ModelRequest)
    router = _router(call)
    entry = router.resolve_strict(body.model)
    await router.load(entry.id)
    return ModelLoadResponse(model=entry.id, success=True)


@models_router.post(
    "/models/unload", responses=ERROR_RESPONSES, openapi_extra=json_body(ModelRequest)
)
async def unload_model(call: CallDep) -> ModelLoadResponse:
    """Unload a model now (not the default model, which serves /health, nor a pinned one:
    ``success`` false)."""
    body = await call.body(ModelRequest)
    router = _router(call)
    entry = router.resolve_strict(body.model)
    return ModelLoadResponse(model=entry.id, success=await router.unload(entry.id))


def _router(call: Call) -> ModelRouter:
    router = get_runtime(call.request).router
    if router is None:
        raise EngineNotReady("The model library is still being read.")
    return router


# --- LoRA adapters (llama-server's /lora-adapters) -------------------------------------
lora_router = APIRouter(dependencies=[Depends(require_api_key)], tags=["lora"])


@lora_router.get("/lora-adapters", responses=ERROR_RESPONSES)
async def list_lora_adapters(call: CallDep) -> list[LoraAdapterInfo]:
    """List the loaded LoRA adapters: id, path, scale, model id and base model."""
    return await lora_serving.list_adapters(call.engine)


@lora_router.post(
    "/lora-adapters",
    responses=ERROR_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "array", "items": LoraEntry.model_json_schema()}
                }
            },
        }
    },
)
async def set_lora_adapters(call: CallDep) -> LoraScaleResult:
    """Set the scales of LoRA adapters: ``[{"id": 0, "scale": 0.5}]`` (others keep theirs)."""
    return await lora_serving.set_scales(call.engine, await json_value(call.request))


FAMILY = RouteFamily(
    "llama",
    (router, models_router, lora_router),
    body_models=(TokenizeRequest, DetokenizeRequest, ChatCompletionRequest, ModelRequest),
)
