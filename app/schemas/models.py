"""``GET /v1/models``, ``POST /models/load`` and ``POST /models/unload`` wire types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.schemas.common import WireRequest


class Model(BaseModel):
    """One served model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    state: Literal["loaded", "loading", "unloaded", "failed"] | None = None  # this server's


class ModelList(BaseModel):
    """OpenAI's list shape."""

    object: Literal["list"] = "list"
    data: list[Model]


class ModelRequest(WireRequest):
    """``POST /models/load`` and ``/models/unload`` (llama-server's router mode)."""

    model: str = Field(min_length=1, max_length=512, description="A model of the library.")


class ModelLoadResponse(BaseModel):
    """Whether the model was loaded (or unloaded)."""

    model: str
    success: bool
