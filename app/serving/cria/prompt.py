"""CRIA's frontend contract: ``{"prompt": ...}`` in, raw text pieces out.

The prompt is one user turn, rendered with the model's chat template and the configured
system prompt (only this contract gets one), capped at ``cria_max_tokens``. The stream's
events carry the text itself (no JSON), then ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from app.engine.types import GenerationRequest, LoraScale, ModelInfo, SamplingParams
from app.schemas.cria import CriaPromptRequest
from app.serving.chat_template import render_conversation
from app.serving.generation import Finished
from app.serving.policy import Limits, find_adapter, max_tokens


def plan_cria(
    body: CriaPromptRequest,
    info: ModelInfo,
    limits: Limits,
    request_id: str,
    version: str | None = None,
) -> GenerationRequest:
    """The engine request for a CRIA frontend prompt: default sampling, the CRIA reply cap.

    A model ``version`` from the path (``v1.3``) that names a LoRA adapter runs on it; other
    versions run on the served model.

    The frontend cannot send a cap, so ``cria_max_tokens`` (256, like CRIA's original server)
    keeps a looping small model from generating until its slot is full.
    """
    turn = {"role": "user", "content": body.prompt}
    prompt, add_bos = render_conversation(
        [turn], info, limits.system_prompt, content_as_text=not limits.parse_special_in_content
    )
    cap = max_tokens(None, limits, info, default=limits.cria_max_tokens)
    adapter = find_adapter(version, info) if version else None
    return GenerationRequest(
        request_id=request_id,
        prompt=prompt,
        sampling=SamplingParams(max_tokens=cap),
        add_special=add_bos,
        lora=(LoraScale(adapter.id),) if adapter is not None else (),
    )


async def cria_pieces(stream: AsyncIterator[str | Finished]) -> AsyncIterator[str]:
    """The raw text pieces of a generation."""
    async for item in stream:
        if not isinstance(item, Finished):
            yield item
