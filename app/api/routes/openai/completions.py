"""``POST /v1/completions``: OpenAI's text completion API."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from app.api.deps import CallDep
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.schemas.completions import CompletionRequest
from app.serving.openai.completions import completion, completion_chunks, plan_completion

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["completions"])


@router.post(
    "/v1/completions",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(CompletionRequest),
)
async def create_completion(call: CallDep) -> Response:
    """Create a text completion for a plain prompt."""
    body = await call.body(CompletionRequest)
    engine = await call.model_engine(body.model)
    # One worker-thread hop: the plan (a response_format's schema checked and converted)
    # and the request's preparation (grammar compiled, prompt tokenized).
    plan, stream = await call.start_planned(
        plan_completion, body, engine.model_info(), call.limits, call.request_id
    )
    if body.stream:
        return call.sse(completion_chunks(plan, stream))
    return await call.json(completion(plan, stream))
