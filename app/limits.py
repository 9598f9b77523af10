"""The cost budget of one request: every size and count limit, in one table.

Each limit bounds work a request could otherwise make the server do (memory, CPU on the
event loop or the engine thread). They are checked before the work starts, and a request
over one gets a 400 that names the limit and the field (``over_limit``). The README's
"Request limits" table lists the same rows; a unit test keeps the two in step.

Limits that scale with the slot context (``n_ctx``) take it as an argument: a server with a
larger context accepts proportionally larger chats.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.errors import InvalidRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    """One row of the table: a name, its bound, the fields it applies to, and why."""

    name: str
    value: int
    fields: str
    why: str


MAX_MESSAGES = Limit(
    "max_messages",
    4096,
    "messages (chat routes)",
    "each message is rendered and counted when a long chat is fitted to the context",
)
PROMPT_BYTES_PER_CTX_TOKEN = Limit(
    "prompt_bytes_per_context_token",
    64,
    "messages, prompt, inputs (bytes per slot-context token)",
    "a chat may outgrow the context (its oldest turns are dropped) but not without bound",
)
MAX_STOP_BYTES = Limit(
    "max_stop_bytes",
    8192,
    "stop (UTF-8 bytes of all stop strings together)",
    "held-back text and the matcher's automaton grow with the stop strings",
)
MAX_EMBEDDING_INPUTS = Limit(
    "max_embedding_inputs",
    256,
    "input (every embeddings route)",
    "each input is one embeddings sequence and one vector in the reply",
)
EMBEDDING_TOKENS_PER_CTX_TOKEN = Limit(
    "embedding_tokens_per_context_token",
    32,
    "input (tokens of all inputs together, per embeddings-context token)",
    "embedding cost is linear in the tokens: 32 full contexts per request",
)
MAX_TOOL_ARGUMENT_DEPTH = Limit(
    "max_json_depth",
    64,
    "tool_calls[].function.arguments, format, response_format",
    "deeply nested JSON overflows recursive parsers and validators",
)
MAX_NULLABLE_REPETITION = Limit(
    "max_nullable_repetition",
    4,
    "grammar, and the grammars of tools and schemas (repetitions of what can match nothing: "
    "(x?){0,n} counts n, nested ones multiply, ones in a row add)",
    "llama.cpp's grammar sampler follows every way a run of text spreads over such copies, "
    "for every token at every step: (x?){0,100} took seconds per token",
)

TABLE: tuple[Limit, ...] = (
    MAX_MESSAGES,
    PROMPT_BYTES_PER_CTX_TOKEN,
    MAX_STOP_BYTES,
    MAX_EMBEDDING_INPUTS,
    EMBEDDING_TOKENS_PER_CTX_TOKEN,
    MAX_TOOL_ARGUMENT_DEPTH,
    MAX_NULLABLE_REPETITION,
)
"""Every limit (the README's table is generated from and checked against this)."""

PENALTY_LAST_N_NOTE = (
    "penalty_last_n / repeat_last_n is clamped to the slot context (-1 means the context), "
    "never refused: llama.cpp keeps a ring buffer of that many tokens"
)


def over_limit(limit: Limit, field: str, got: int, bound: int | None = None) -> InvalidRequest:
    """The 400 for a request over ``limit`` in ``field`` (``bound``: the value it scaled to)."""
    allowed = limit.value if bound is None else bound
    return InvalidRequest(
        f"{field}: {got} is over this server's limit {limit.name} = {allowed}.", param=field
    )


def check_count(limit: Limit, field: str, got: int, bound: int | None = None) -> None:
    """Raise the 400 when ``got`` exceeds the limit (or its scaled ``bound``)."""
    allowed = limit.value if bound is None else bound
    if got > allowed:
        raise over_limit(limit, field, got, allowed)


def prompt_bytes_bound(n_ctx: int) -> int:
    """The most UTF-8 bytes of prompt text a request may send to a slot of ``n_ctx`` tokens."""
    return PROMPT_BYTES_PER_CTX_TOKEN.value * max(n_ctx, 1)


def check_prompt_bytes(field: str, n_bytes: int, n_ctx: int) -> None:
    """Refuse prompt text far larger than the slot context could ever hold."""
    check_count(PROMPT_BYTES_PER_CTX_TOKEN, field, n_bytes, prompt_bytes_bound(n_ctx))


def check_stops(field: str, stops: tuple[str, ...]) -> None:
    """Refuse stop strings whose bytes together exceed ``max_stop_bytes``."""
    total = sum(len(stop.encode("utf-8", "surrogatepass")) for stop in stops)
    check_count(MAX_STOP_BYTES, field, total)


def clamp_last_n(last_n: int, n_ctx: int) -> int:
    """``penalty_last_n`` clamped to the slot context (``-1``: the whole context)."""
    return n_ctx if last_n < 0 else min(last_n, n_ctx)


def json_depth(value: object, limit: int = MAX_TOOL_ARGUMENT_DEPTH.value) -> int:
    """Nesting depth of a JSON value, counted without recursion (stops past ``limit``)."""
    depth = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            depth = max(depth, level)
            if depth > limit:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return depth


def readme_table() -> str:
    """The README's markdown table of the limits."""
    rows = ["| limit | value | applies to | why |", "|---|---|---|---|"]
    rows += [f"| `{lim.name}` | {lim.value:,} | {lim.fields} | {lim.why} |" for lim in TABLE]
    return "\n".join(rows)
