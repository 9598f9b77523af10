"""Wire types of ``/tokenize`` and ``/detokenize`` (llama-server's shapes, plus chat counting)."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field, model_validator

from app.schemas.chat import ChatMessage
from app.schemas.common import WireRequest


class TokenizeRequest(WireRequest):
    """``POST /tokenize``: ``content`` (llama-server), or ``messages`` to count a chat prompt."""

    content: str | None = Field(None, description="Text to tokenize (special tokens parsed).")
    messages: list[ChatMessage] | None = Field(
        None,
        min_length=1,
        description="A chat to tokenize as /v1/chat/completions would prompt the model: "
        "chat template applied, assistant turn opened.",
    )
    add_special: bool = Field(False, description="Add BOS when the model wants one (content).")
    with_pieces: bool = Field(False, description="Return {id, piece} objects instead of ids.")
    model: str | None = None

    @model_validator(mode="after")
    def _one_input(self) -> Self:
        if (self.content is None) == (self.messages is None):
            raise ValueError("send exactly one of 'content' and 'messages'")
        return self


class TokenPiece(BaseModel):
    """A token and its piece: text when it is valid UTF-8, else its bytes."""

    id: int
    piece: str | list[int]


class TokenizeResponse(BaseModel):
    """The token ids (or pieces), their count and the context one request may fill."""

    tokens: list[int] | list[TokenPiece]
    count: int
    max_model_len: int


class DetokenizeRequest(WireRequest):
    """``POST /detokenize``."""

    tokens: list[int]
    model: str | None = None


class DetokenizeResponse(BaseModel):
    """The text of the tokens."""

    content: str


class ApplyTemplateResponse(BaseModel):
    """``POST /apply-template``: the prompt a chat body renders to (llama-server's route)."""

    prompt: str
