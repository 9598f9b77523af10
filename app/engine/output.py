"""The engine's output stage: from a sampled token to a text event and a finish reason.

One ``SequenceOutput`` per sequence holds its text pipeline - the UTF-8 detokenizer and the
stop-string matcher, both pure modules - and decides when the sequence ends: an end-of-
generation token (unless ``ignore_eos``), a stop string, ``max_tokens``, or a full slot.
``TokenTable`` caches the two lookups every token needs (its bytes, whether it ends a
generation) once per engine, so the step loop does not call into the model per token.
Engine thread only.
"""

from __future__ import annotations

from app.engine.backend import ModelBackend
from app.engine.detokenizer import Detokenizer
from app.engine.stops import StopMatcher
from app.engine.types import FinishReason, SamplingParams, TokenEvent, TokenLogprob


class TokenTable:
    """Per-token facts the output stage reads, looked up from the model once per token id."""

    def __init__(self, backend: ModelBackend) -> None:
        self._backend = backend
        self._pieces: dict[int, bytes] = {}
        self._special: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends a generation (EOS, EOT, ...)."""
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = self._backend.is_eog(token)
        return eog

    def piece(self, token: int) -> bytes:
        """The raw bytes ``token`` stands for (possibly part of a UTF-8 character)."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._backend.token_to_bytes(token)
        return piece

    def special_piece(self, token: int) -> bytes:
        """The raw bytes of ``token`` with control tokens rendered (their marker text)."""
        piece = self._special.get(token)
        if piece is None:
            piece = self._special[token] = self._backend.special_piece(token)
        return piece


class SequenceOutput:
    """Turns one sequence's sampled tokens into events, and says when the sequence ends."""

    __slots__ = (
        "_detok",
        "_n_ctx",
        "_opened_at",
        "_params",
        "_request_id",
        "_seen",
        "_stops",
        "_table",
        "_thinking",
    )

    def __init__(
        self, request_id: str, params: SamplingParams, table: TokenTable, n_ctx: int
    ) -> None:
        self._request_id = request_id
        self._params = params
        self._table = table
        self._n_ctx = n_ctx
        self._detok = Detokenizer()
        self._stops = StopMatcher(params.stop) if params.stop else None
        # Reasoning budget: None (not watched, or the block closed), "start" (the reply may
        # open a block), "inside". ``_seen``: the text the markers are looked for in.
        self._thinking: str | None = None
        if params.reasoning_budget is not None and params.reasoning_markers[1]:
            self._thinking = "inside" if params.reasoning_open else "start"
        self._seen = ""
        self._opened_at = 0  # generated tokens before the block opened

    def on_token(
        self, token: int, *, n_generated: int, n_past: int, logprob: TokenLogprob | None
    ) -> tuple[TokenEvent | None, FinishReason | None]:
        """The event for the ``n_generated``-th sampled token (None for an end token, which
        is not shown), and the finish reason if the sequence ends with it.

        ``n_past`` is the number of KV cells the sequence fills: at ``n_ctx`` no cell is left
        to feed this token back, so the reply ends with ``length``.
        """
        params = self._params
        if self._table.is_eog(token) and not params.ignore_eos:
            return None, FinishReason.STOP
        table = self._table
        raw = table.special_piece(token) if params.special_text else table.piece(token)
        text = self._detok.push(raw)
        if self._thinking is not None and text:
            self._watch_reasoning(text, n_generated)
        stopped = False
        if self._stops is not None and text:
            text, stopped = self._stops.push(text)
        event = TokenEvent(self._request_id, text, token, logprob=logprob)
        if stopped:
            return event, FinishReason.STOP
        cap = params.max_tokens
        if n_past >= self._n_ctx or (cap is not None and n_generated >= cap):
            return event, FinishReason.LENGTH
        return event, None

    def tail_text(self) -> str:
        """Held-back text at a normal end: incomplete UTF-8, then a partial stop match."""
        text = self._detok.flush()
        stops = self._stops
        if stops is None:
            return text
        if text:
            text, stopped = stops.push(text)
            if stopped:
                return text
        return text + stops.flush()

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the text, if one did."""
        return self._stops.matched if self._stops is not None else None

    def _watch_reasoning(self, text: str, n_generated: int) -> None:
        opening, closing = self._params.reasoning_markers
        self._seen += text
        if self._thinking == "start":
            head = self._seen.lstrip()
            if head.startswith(opening):
                self._thinking, self._seen = "inside", head[len(opening) :]
                self._opened_at = n_generated
            elif not opening.startswith(head):
                self._thinking = None  # no thinking block: nothing to budget
                return
        if self._thinking == "inside":
            if closing in self._seen:
                self._thinking = None
            else:
                self._seen = self._seen[-len(closing) :]

    def over_reasoning_budget(self, n_generated: int) -> bool:
        """Whether the thinking block is still open after its budget of tokens (counted from
        the one that opened it); then the block counts as closed (the caller writes the close
        marker)."""
        budget = self._params.reasoning_budget
        if self._thinking != "inside" or budget is None or n_generated - self._opened_at < budget:
            return False
        self._thinking = None
        return True
