"""OpenAI's response plan: a validated request and what its response objects need; usage."""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.engine.types import GenerationRequest, Usage
from app.schemas.common import CompletionUsage, PromptTokensDetails
from app.serving.context import dropped_headers
from app.serving.reasoning import ReasoningPlan
from app.serving.tools import ToolCalls


@dataclass(frozen=True)
class ResponsePlan:
    """A validated request, ready for the engine, and what its response objects need."""

    request: GenerationRequest
    completion_id: str
    model: str
    created: int
    include_usage: bool
    tool_calls: ToolCalls | None = None  # chat with tools: parse calls out of the reply
    dropped_messages: int = 0  # oldest chat messages left out to fit the context
    reasoning: ReasoningPlan | None = None  # chat: split the reasoning out of the reply
    schema: str | None = None  # response_format's JSON Schema: the reply is checked against it

    def headers(self) -> dict[str, str]:
        """Response headers that describe the plan (what was dropped to fit, if anything)."""
        return dropped_headers(self.dropped_messages)

    @classmethod
    def new(
        cls, request: GenerationRequest, *, id_prefix: str, model: str, include_usage: bool
    ) -> ResponsePlan:
        """A plan created now, with an OpenAI-style id (``chatcmpl-...``, ``cmpl-...``)."""
        completion_id = f"{id_prefix}-{request.request_id}"
        return cls(request, completion_id, model, int(time.time()), include_usage)


def wire_usage(usage: Usage) -> CompletionUsage:
    """OpenAI's usage object from the engine's."""
    return CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_prompt_tokens),
    )
