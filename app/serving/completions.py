"""Text completions: a plain prompt in, OpenAI ``text_completion`` objects out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from app.engine.types import GenerationRequest, ModelInfo
from app.schemas.completions import Completion, CompletionChoice, CompletionRequest
from app.serving.generation import collect
from app.serving.sampling import (
    Finished,
    Limits,
    max_tokens,
    sampling_params,
    served_model_name,
    wire_usage,
)


@dataclass(frozen=True)
class CompletionPlan:
    """A validated completion request, ready for the engine."""

    request: GenerationRequest
    completion_id: str
    model: str
    created: int
    include_usage: bool


def plan_completion(
    body: CompletionRequest, info: ModelInfo, limits: Limits, request_id: str
) -> CompletionPlan:
    """Check the request against the served model and limits and build the engine request."""
    model = served_model_name(body.model, info)
    request = GenerationRequest(
        request_id=request_id,
        prompt=body.prompt_input(),
        sampling=sampling_params(body, max_tokens(body.max_tokens, limits)),
    )
    return CompletionPlan(
        request=request,
        completion_id=f"cmpl-{request_id}",
        model=model,
        created=int(time.time()),
        include_usage=body.wants_usage_chunk(),
    )


def _completion(plan: CompletionPlan, choices: list[CompletionChoice]) -> Completion:
    return Completion(
        id=plan.completion_id,
        created=plan.created,
        model=plan.model,
        choices=choices,
        include_usage=plan.include_usage,
    )


async def completion_chunks(
    plan: CompletionPlan, stream: AsyncIterator[str | Finished]
) -> AsyncIterator[Completion]:
    """Streamed ``text_completion`` chunks: text pieces, finish_reason, optional usage."""
    async for item in stream:
        if not isinstance(item, Finished):
            yield _completion(plan, [CompletionChoice(text=item)])
            continue
        yield _completion(plan, [CompletionChoice(text="", finish_reason=item.reason)])
        if plan.include_usage:
            last = _completion(plan, [])
            yield last.model_copy(update={"usage": wire_usage(item.usage)})


async def completion(plan: CompletionPlan, stream: AsyncIterator[str | Finished]) -> Completion:
    """The whole continuation as one ``text_completion``."""
    result = await collect(stream)
    return Completion(
        id=plan.completion_id,
        created=plan.created,
        model=plan.model,
        choices=[CompletionChoice(text=result.text, finish_reason=result.finished.reason)],
        usage=wire_usage(result.finished.usage),
    )
