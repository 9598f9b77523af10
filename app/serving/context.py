"""Fitting a long conversation into the slot context by dropping its oldest turns.

When a chat's history outgrows the context, the default (``--context-overflow truncate``)
drops whole turns after the leading system messages, oldest first, until the rendered
prompt leaves room for the reply - the way Ollama truncates - so a long conversation keeps
working instead of failing every turn. The last user message and what follows it are
always kept. ``error`` keeps the strict behaviour (a 400 when the prompt does not fit).
Pure: rendering and token counting come in as functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

ContextOverflow = Literal["truncate", "error"]
Message = Mapping[str, Any]

DROPPED_MESSAGES_HEADER = "X-Context-Dropped-Messages"
"""The response header that says how many oldest messages were left out to fit."""


def dropped_headers(dropped: int) -> dict[str, str]:
    """Response headers that say how many oldest messages were dropped to fit (none: {})."""
    return {DROPPED_MESSAGES_HEADER: str(dropped)} if dropped else {}


REPLY_ROOM_SHARE = 4
"""Without a max_tokens, a truncated prompt leaves a quarter of the context for the reply."""

CUT_BLOCK_SHARE = 4
"""Cuts move in steps of a quarter of the context (see ``fit_messages``)."""


@dataclass(frozen=True)
class Fitted:
    """The messages to render, and how many were dropped from the front of the history."""

    messages: list[Message]
    dropped: int


def reply_room(cap: int | None, n_ctx: int) -> int:
    """Tokens kept free for the reply: the request's cap, at most a quarter of the context."""
    share = max(1, n_ctx // REPLY_ROOM_SHARE)
    return min(cap, share) if cap is not None else share


def _turn_starts(messages: Sequence[Message], first: int, last_user: int) -> list[int]:
    """Indices where a droppable turn starts (a user message), between the two bounds."""
    starts = [i for i in range(first, last_user) if messages[i].get("role") == "user"]
    if not starts or starts[0] != first:
        starts.insert(0, first)  # history that opens with an assistant message
    return starts


def fit_messages(
    messages: Sequence[Message],
    *,
    prompt_tokens: Callable[[list[Message]], int],
    message_tokens: Callable[[Message], int],
    n_ctx: int,
    room: int,
) -> Fitted:
    """Drop the oldest whole turns until ``prompt_tokens(kept) + room <= n_ctx``.

    The whole chat is rendered and counted once (``prompt_tokens``), each message once on
    its own (``message_tokens``: its content's tokens); the cut is chosen from those counts
    (what dropping turns saves is the sum of their messages' counts plus their share of the
    template's scaffolding) and checked with one more render of the kept messages, moving
    one more turn while that still does not fit. So a long chat costs a few renders, not a
    bisection of renders of the whole chat (30,000 short turns once took a minute).

    The cut is rounded up to a block of turns (about a quarter of the context) so that it
    stays put while the chat grows and the next turns find their prefix in the KV cache.

    When even the system messages plus the last user turn leave less room than asked, those
    are kept (the reply gets what room is left); when they do not fit at all, the engine
    refuses the prompt with ``ContextLengthExceeded`` as for any other request.
    """
    full = list(messages)
    n_tokens = prompt_tokens(full)
    if n_tokens + room <= n_ctx:
        return Fitted(full, 0)
    first = 0
    while first < len(full) and full[first].get("role") == "system":
        first += 1
    users = [i for i in range(first, len(full)) if full[i].get("role") == "user"]
    last_user = users[-1] if users else len(full) - 1
    starts = [*_turn_starts(full, first, last_user), last_user]
    last = len(starts) - 1
    if last < 1:
        return Fitted(full, 0)
    saved = _savings(full, starts, n_tokens, message_tokens)
    need = n_tokens + room - n_ctx
    fewest = next((k for k in range(1, last + 1) if saved[k] >= need), last)
    # Then cut at a stable place: the tokens the first k turns take do not change as the
    # chat grows, so rounding that up to a whole block keeps the same cut (and the same
    # cached prefix) for the next turns until the context fills again, instead of moving
    # the cut, and re-reading the whole window, every turn.
    block = max(1, n_ctx // CUT_BLOCK_SHARE)
    target = -(-saved[fewest] // block) * block
    k = next((k for k in range(fewest, last + 1) if saved[k] >= target), last)
    # The counts are an estimate (tokens can merge across a message's edges): check once,
    # and drop one more turn at a time while the kept messages still do not fit.
    for _ in range(MAX_CHECKS):
        if k >= last or prompt_tokens(full[:first] + full[starts[k] :]) + room <= n_ctx:
            break
        k += 1
    result = full[:first] + full[starts[k] :]
    return Fitted(result, len(full) - len(result))


MAX_CHECKS = 4
"""Renders of the kept messages at most, after the estimate (each one renders the window)."""


def _savings(
    full: list[Message],
    starts: list[int],
    n_tokens: int,
    message_tokens: Callable[[Message], int],
) -> list[int]:
    """``saved[k]``: the estimated tokens that dropping the first ``k`` turns saves.

    Each message costs its content's tokens plus an equal share of the scaffolding (the
    rendered prompt's tokens that no content accounts for).
    """
    counts = [message_tokens(message) for message in full]
    scaffold = max(0, n_tokens - sum(counts)) / max(1, len(full))
    saved = [0]
    for k in range(1, len(starts)):
        dropped = range(starts[k - 1], starts[k])
        saved.append(saved[-1] + sum(counts[i] for i in dropped) + round(scaffold * len(dropped)))
    return saved
