"""OpenAI embeddings wire types: ``POST /v1/embeddings``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from app.limits import MAX_EMBEDDING_INPUTS
from app.schemas.common import WireRequest

MAX_INPUTS = MAX_EMBEDDING_INPUTS.value  # OpenAI allows 2048; this is a CPU-sized server


class EmbeddingRequest(WireRequest):
    """``POST /v1/embeddings``: one string or a list of strings."""

    input: str | list[str] = Field(description="Text, or a list of texts, to embed.")
    model: str | None = Field(None, description="Served model id (alias or file name).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not 1 <= len(value) <= MAX_INPUTS:
            raise ValueError(f"send between 1 and {MAX_INPUTS} inputs")
        return value

    def texts(self) -> list[str]:
        """The inputs as a list."""
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(BaseModel):
    """One input's vector: floats, or base64 of little-endian float32 values."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    """Tokens the inputs took."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    """The answer: one embedding per input, in order."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
