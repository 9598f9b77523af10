"""Tool-call formats, one module per model family, chosen from the model's chat template.

Detection looks for each format's markers in the template (as llama.cpp's autoparser derives
the syntax from the template), most specific first; a template with none of them gets the
generic form (tools described in the system message, Hermes ``<tool_call>`` blocks). The
``--tool-call-format`` setting names a format instead.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from app.errors import InvalidRequest
from app.serving.tool_formats.base import CallDelta, ParsedCall, ToolFormat, ToolSpec
from app.serving.tool_formats.deepseek import DeepSeekFormat, DeepSeekV31Format
from app.serving.tool_formats.harmony import HarmonyFormat
from app.serving.tool_formats.hermes import GenericFormat, HermesFormat
from app.serving.tool_formats.llama3 import Llama3Format
from app.serving.tool_formats.mistral import MistralArgsFormat, MistralFormat
from app.serving.tool_formats.qwen3_coder import Qwen3CoderFormat
from app.serving.tool_formats.splitter import CallSplitter

logger = logging.getLogger(__name__)

# Most specific first: Qwen3-Coder's template also has <tool_call>, Devstral's [TOOL_CALLS].
DETECTED: tuple[type[ToolFormat], ...] = (
    Qwen3CoderFormat,
    HermesFormat,
    MistralArgsFormat,
    MistralFormat,
    DeepSeekFormat,
    DeepSeekV31Format,
    HarmonyFormat,
    Llama3Format,
)
_ALL: tuple[type[ToolFormat], ...] = (*DETECTED, GenericFormat)
FORMATS: dict[str, type[ToolFormat]] = {fmt.name: fmt for fmt in _ALL}
FORMAT_NAMES = ("auto", *FORMATS)

__all__ = [
    "FORMATS",
    "FORMAT_NAMES",
    "CallDelta",
    "CallSplitter",
    "ParsedCall",
    "ToolFormat",
    "ToolSpec",
    "choose_format",
]


def choose_format(template: str | None, override: str = "auto") -> ToolFormat:
    """The format for a model: ``override`` when it names one, else detected from ``template``."""
    if override != "auto":
        if override not in FORMATS:
            raise InvalidRequest(f"Unknown tool-call format {override!r}.", param="tools")
        return FORMATS[override]()
    return _detect(template or "")()


@lru_cache(maxsize=8)
def _detect(template: str) -> type[ToolFormat]:
    found = next((f for f in DETECTED if f.detect(template)), GenericFormat)
    logger.info("tool-call format: %s (detected from the chat template)", found.name)
    return found
