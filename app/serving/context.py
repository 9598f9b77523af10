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
    n_ctx: int,
    room: int,
) -> Fitted:
    """Drop the oldest whole turns until ``prompt_tokens(kept) + room <= n_ctx``.

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

    def kept(k: int) -> list[Message]:  # drop the first k turns
        return full[:first] + full[starts[k] :]

    last = len(starts) - 1
    if last < 1:
        return Fitted(full, 0)

    def first_k(ok: Callable[[int], bool]) -> int:
        """The smallest k in [1, last] with ok(k) (ok is monotone), else last."""
        lo, hi = 1, last
        if not ok(hi):
            return hi
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    # The fewest turns to drop so that the prompt fits (the count falls as turns go).
    fewest = first_k(lambda k: prompt_tokens(kept(k)) + room <= n_ctx)
    # Then cut at a stable place: the tokens the first k turns take do not change as the
    # chat grows, so rounding that up to a whole block keeps the same cut (and the same
    # cached prefix) for the next turns until the context fills again, instead of moving
    # the cut, and re-reading the whole window, every turn.
    block = max(1, n_ctx // CUT_BLOCK_SHARE)
    need = n_tokens - prompt_tokens(kept(fewest))
    target = -(-need // block) * block
    k = max(fewest, first_k(lambda k: n_tokens - prompt_tokens(kept(k)) >= target))
    result = kept(k)
    return Fitted(result, len(full) - len(result))
