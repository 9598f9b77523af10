"""A request's prompt as token ids: the one place text, rendered chats and id lists become
the tokens a sequence starts from (the in-process engine and the worker proxy share it).

A ``ChatPrompt`` is tokenized part by part: the template's scaffolding with special-token
parsing (``<|im_start|>`` becomes its control token), message contents without it, so text a
user typed cannot become a control token. BOS, when wanted, goes before the first part only.
"""

from __future__ import annotations

import logging
from typing import Protocol

from app.engine.types import ChatPrompt, GenerationRequest
from app.engine.validate import check_token_ids
from app.errors import InvalidRequest
from app.limits import check_prompt_bytes

logger = logging.getLogger(__name__)


class Tokenizer(Protocol):
    """What prompt tokenization needs: the backend, or the API process's vocabulary."""

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``."""
        ...


def prompt_tokens(
    request: GenerationRequest, tokenizer: Tokenizer, *, n_vocab: int, n_ctx: int
) -> list[int]:
    """The prompt's token ids (``prompt_tokens`` when already tokenized by ``prepare``).

    Raises ``InvalidRequest`` for an empty prompt, ids outside the vocabulary, or text far
    larger than the slot context could hold (refused before tokenizing it).
    """
    prompt = request.prompt
    if request.prompt_tokens is not None:
        tokens = list(request.prompt_tokens)  # from ``prepare``: our own tokenizer's ids
    elif isinstance(prompt, ChatPrompt):
        check_prompt_bytes("messages", _utf8_len(prompt.text), n_ctx)
        tokens = _chat_tokens(prompt, tokenizer, add_special=request.add_special)
    elif isinstance(prompt, str):
        check_prompt_bytes("prompt", _utf8_len(prompt), n_ctx)
        tokens = tokenizer.tokenize(prompt, add_special=request.add_special) if prompt else []
    else:
        tokens = list(prompt)
        check_token_ids(tokens, n_vocab, "prompt")
    if not prompt or not tokens:
        raise InvalidRequest("The prompt is empty.", param="prompt")
    return tokens


def _chat_tokens(prompt: ChatPrompt, tokenizer: Tokenizer, *, add_special: bool) -> list[int]:
    tokens: list[int] = []
    for part in prompt.parts:
        if part.text:
            first = add_special and not tokens  # BOS, if wanted, before the first part only
            tokens += tokenizer.tokenize(part.text, add_special=first, parse_special=part.special)
    return tokens


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))
