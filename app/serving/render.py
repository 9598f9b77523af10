"""Pre-rendered JSON for stream chunks: the envelope is serialized once per stream.

A streamed reply sends one chunk per token, and all chunks of a stream share everything
but the text (id, created, model, choice index...). Building and validating a pydantic
model per token is the costliest part of a stream on the event loop thread, so each
stream renders its content-chunk envelope once, through the same pydantic model (so the
shape cannot drift), with a placeholder where the text goes; each token then costs one
``json.dumps`` of its text and two string joins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel

# A private-use character sequence no tokenizer piece is expected to produce; the template
# checks that it occurs exactly once in the rendered envelope.
HOLE = "\ue000cria:text\ue001"


class RawJson(str):
    """A JSON document already serialized (sent as is, never re-encoded)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class NamedEvent:
    """A stream chunk with an SSE event name: ``event: <name>`` followed by its data (a
    model, pre-rendered JSON or text), as OpenAI's Responses and Anthropic's Messages name
    every event. Framed in ``app.api.sse``; defined here, beside ``RawJson``, so that the
    serving families can yield it."""

    name: str  # no newlines (the families' event names are fixed words)
    data: BaseModel | RawJson | str


def json_string(text: str) -> str:
    """``text`` as a JSON string literal (UTF-8 kept, as pydantic writes it)."""
    return json.dumps(text, ensure_ascii=False)


class JsonTemplate:
    """A model's JSON with one string field left open: ``fill(text)`` closes it."""

    __slots__ = ("_after", "_before")

    def __init__(self, model: BaseModel) -> None:
        """``model`` must carry ``HOLE`` as the value of exactly one string field."""
        rendered = model.model_dump_json()
        before, hole, after = rendered.partition(json_string(HOLE))
        if not hole or HOLE in after:
            raise ValueError("the template model must hold the placeholder exactly once")
        self._before, self._after = before, after

    def fill(self, text: str) -> RawJson:
        """The model's JSON with ``text`` in the open field."""
        return RawJson(self._before + json_string(text) + self._after)
