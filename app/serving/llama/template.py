"""``POST /apply-template``: the prompt text a chat body renders to, as llama-server answers.

The same rendering as a chat completion: the model's template (or ``--chat-template-file``,
or the architecture's fallback), the tools and the history in the family's own shape, and
``chat_template_kwargs``; nothing is generated.
"""

from __future__ import annotations

from app.engine.types import ModelInfo
from app.schemas.chat import ChatCompletionRequest
from app.schemas.tokenize import ApplyTemplateResponse
from app.serving.chat_template import (
    conversation,
    render_conversation,
    template_source,
    template_variables,
)
from app.serving.policy import Limits, served_model_name
from app.serving.tools import tool_prompt


def apply_template(
    body: ChatCompletionRequest, info: ModelInfo, limits: Limits
) -> ApplyTemplateResponse:
    """The rendered prompt of ``body``."""
    served_model_name(body.model, info, limits)
    conversation(body.messages)  # the checks on the messages
    tooling = tool_prompt(body, template_source(info), limits.tool_call_format)
    variables = template_variables(body.chat_template_kwargs, body.reasoning_effort)
    prompt, _ = render_conversation(
        tooling.messages,
        info,
        tools=tooling.template_tools,
        variables=variables,
        content_as_text=False,  # only the text is answered: no spans needed
    )
    return ApplyTemplateResponse(prompt=str(prompt))  # the text (a ChatPrompt prints it)
