"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` / ``DELETE /v1/responses/{id}``
and ``POST /v1/responses/input_tokens``, with OpenAI's error body.

Streams are named SSE events (``event: response.output_text.delta`` plus its JSON data),
numbered by ``sequence_number``, with no ``[DONE]``. An error after the stream started ends
it with an ``error`` event and a ``response.failed`` event carrying the same detail as an
error answer. Finished responses are kept in the app's bounded store (unless ``store`` is
false) so that ``previous_response_id`` can continue a conversation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Response

from app.api.deps import Call, CallDep
from app.api.errors import error_body
from app.api.family import RouteFamily
from app.api.openapi import ERROR_RESPONSES, json_body
from app.api.security import require_api_key
from app.api.sse import NamedEvent
from app.errors import EngineError
from app.schemas.responses import (
    DeletedResponse,
    InputTokenCount,
    ResponseObject,
    ResponsesRequest,
)
from app.serving.responses.events import (
    Event,
    OnDone,
    ResponseBuilder,
    event_name,
    final_response,
    response_events,
)
from app.serving.responses.plan import ResponsesPlan, input_prompt, plan_response
from app.serving.responses.store import ResponseStore

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["responses"])


def response_store(call: Call) -> ResponseStore:
    """The app's store of finished responses (created in the app factory)."""
    store: ResponseStore = call.request.app.state.response_store
    return store


async def _named(
    builder: ResponseBuilder, events: AsyncIterator[Event]
) -> AsyncIterator[NamedEvent]:
    """Each event with its name; a failure becomes ``error`` + ``response.failed``."""
    try:
        async for event in events:
            yield NamedEvent(event_name(event), event)
    except Exception as exc:  # the 200 went out: report the failure in-band
        if isinstance(exc, EngineError):
            logger.info("response stream ended with %s: %s", type(exc).__name__, exc.message)
        else:
            logger.error("response stream failed", exc_info=exc)
        detail = error_body(exc).error
        for event in builder.fail(detail.code or detail.type, detail.message, detail.param):
            yield NamedEvent(event.type, event)


def _storing(call: Call, plan: ResponsesPlan) -> OnDone | None:
    if not plan.store:
        return None
    store = response_store(call)

    def keep(response: ResponseObject) -> None:
        store.put(response, plan.history)

    return keep


@router.post(
    "/v1/responses",
    response_model=None,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(ResponsesRequest),
)
async def create_response(call: CallDep) -> Response:
    """Create a model response (OpenAI Responses), streamed as named events when asked."""
    body = await call.body(ResponsesRequest)
    previous = response_store(call).previous(body.previous_response_id)
    engine = await call.model_engine(body.model)
    plan, stream = await call.start_planned(
        plan_response,
        body,
        previous,
        engine.model_info(),
        call.limits,
        call.request_id,
        engine.count_tokens,
    )
    on_done = _storing(call, plan)
    if body.stream:
        builder = ResponseBuilder(plan.template)
        events = response_events(plan, builder, stream, on_done)
        return call.sse(_named(builder, events), headers=plan.headers(), done=None)
    return await call.json(final_response(plan, stream, on_done), headers=plan.headers())


@router.post(
    "/v1/responses/input_tokens",
    response_model=InputTokenCount,
    responses=ERROR_RESPONSES,
    openapi_extra=json_body(ResponsesRequest),
)
async def count_input_tokens(call: CallDep) -> InputTokenCount:
    """Count the input tokens a response request would use, without generating."""
    body = await call.body(ResponsesRequest)
    previous = response_store(call).previous(body.previous_response_id)
    engine = await call.model_engine(body.model)
    info, limits, request_id = engine.model_info(), call.limits, call.request_id

    def count() -> int:
        prompt, add_bos = input_prompt(body, previous, info, limits, request_id)
        return engine.count_tokens(prompt, add_special=add_bos)

    return InputTokenCount(input_tokens=await asyncio.to_thread(count))


@router.get("/v1/responses/{response_id}", response_model=None, responses=ERROR_RESPONSES)
async def retrieve_response(response_id: str, call: CallDep) -> Response:
    """A stored response by id (404 when it was not stored or has been evicted)."""
    response = response_store(call).get(response_id).response
    return Response(response.model_dump_json(), media_type="application/json")


@router.delete("/v1/responses/{response_id}", response_model=None, responses=ERROR_RESPONSES)
async def delete_response(response_id: str, call: CallDep) -> Response:
    """Delete a stored response (404 when there is none with that id)."""
    response_store(call).delete(response_id)
    body = DeletedResponse(id=response_id)
    return Response(body.model_dump_json(), media_type="application/json")


FAMILY = RouteFamily("responses", (router,), body_models=(ResponsesRequest,))
