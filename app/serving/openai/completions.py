"""OpenAI text completions: a plain prompt in, OpenAI ``text_completion`` objects out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from app.engine.types import GenerationRequest, ModelInfo
from app.schemas.completions import Completion, CompletionChoice, CompletionRequest
from app.serving.generation import Finished, collect
from app.serving.logprobs import LoggedPiece, completion_logprobs
from app.serving.openai.plan import ResponsePlan, wire_usage
from app.serving.policy import Limits, max_tokens
from app.serving.render import HOLE, JsonTemplate, RawJson
from app.serving.sampling import model_choice, sampling_params
from app.serving.schema_check import unreported


def plan_completion(
    body: CompletionRequest, info: ModelInfo, limits: Limits, request_id: str
) -> ResponsePlan:
    """Check the request against the served model and limits and build the engine request."""
    choice = model_choice(body, info, limits)
    cap = max_tokens(body.max_tokens, limits, info, default=limits.default_max_tokens)
    request = GenerationRequest(
        request_id=request_id,
        prompt=body.prompt_input(),
        sampling=sampling_params(body, cap, unreported(limits.schemas)),  # no schema_check here
        lora=choice.lora,
        speculative=body.speculative is not False,
    )
    return ResponsePlan.new(
        request, id_prefix="cmpl", model=choice.name, include_usage=body.wants_usage_chunk()
    )


def _completion(plan: ResponsePlan, choices: list[CompletionChoice]) -> Completion:
    return Completion(
        id=plan.completion_id,
        created=plan.created,
        model=plan.model,
        choices=choices,
        include_usage=plan.include_usage,
    )


async def completion_chunks(
    plan: ResponsePlan, stream: AsyncIterator[str | Finished]
) -> AsyncIterator[Completion | RawJson]:
    """Streamed ``text_completion`` chunks: text pieces, finish_reason, optional usage.

    Text chunks come from a template rendered once per stream (see ``render``).
    """
    text = JsonTemplate(_completion(plan, [CompletionChoice(text=HOLE)]))
    offset = 0  # text_offset of the next token, counted over the whole completion
    async for item in stream:
        if isinstance(item, LoggedPiece):
            logprobs = completion_logprobs(item.logprobs, offset)
            yield _completion(plan, [CompletionChoice(text=str(item), logprobs=logprobs)])
            offset += len(item)
            continue
        if not isinstance(item, Finished):
            yield text.fill(item)
            offset += len(item)
            continue
        tail = completion_logprobs(item.logprobs, offset) if item.logprobs else None
        yield _completion(
            plan, [CompletionChoice(text="", finish_reason=item.reason, logprobs=tail)]
        )
        if plan.include_usage:
            last = _completion(plan, [])
            yield last.model_copy(update={"usage": wire_usage(item.usage)})


async def completion(plan: ResponsePlan, stream: AsyncIterator[str | Finished]) -> Completion:
    """The whole continuation as one ``text_completion``."""
    result = await collect(stream)
    wanted = plan.request.sampling.logprobs is not None
    choice = CompletionChoice(
        text=result.text,
        finish_reason=result.finished.reason,
        logprobs=completion_logprobs(result.logprobs) if wanted else None,
    )
    return Completion(
        id=plan.completion_id,
        created=plan.created,
        model=plan.model,
        choices=[choice],
        usage=wire_usage(result.finished.usage),
    )
