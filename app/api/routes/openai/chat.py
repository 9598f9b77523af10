"""``POST /v{N}/chat/completions``: OpenAI's chat API.

Served on ``/v1/chat/completions`` (and ``/v2``, ...: the segment is OpenAI's API version).
CRIA's frontend posts its own ``{"prompt"}`` body to the same path: that body belongs to the
CRIA family, so this route hands it to CRIA's handler (``app.api.routes.cria``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from starlette.convertors import Convertor, register_url_convertor

from app.api.deps import CallDep, json_object, parse_body
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.routes.cria import create_cria_completion, is_cria_body
from app.api.security import require_api_key
from app.schemas.chat import ChatCompletionRequest
from app.schemas.cria import CriaPromptRequest
from app.serving.openai.chat import chat_chunks, chat_completion, plan_chat

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["chat"])


class ApiVersionConvertor(Convertor[str]):
    """A path segment that is an OpenAI API version: ``v1``, ``v2``..."""

    regex = "v[0-9]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("api_version", ApiVersionConvertor())


@router.post(
    "/{api_version:api_version}/chat/completions",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(ChatCompletionRequest, CriaPromptRequest),
)
async def create_chat_completion(api_version: str, call: CallDep) -> Response:
    """Create a chat completion (OpenAI), or stream raw text for CRIA's ``{"prompt"}`` body."""
    body = await json_object(call.request)
    if is_cria_body(body):
        return await create_cria_completion(body, call)
    chat = parse_body(ChatCompletionRequest, body)
    engine = await call.model_engine(chat.model)
    plan, stream = await call.start_planned(
        plan_chat, chat, engine.model_info(), call.limits, call.request_id, engine.count_tokens
    )
    if chat.stream:
        return call.sse(chat_chunks(plan, stream), headers=plan.headers())
    return await call.json(chat_completion(plan, stream), headers=plan.headers())
