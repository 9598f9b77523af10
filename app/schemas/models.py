"""``GET /v1/models`` wire types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Model(BaseModel):
    """One served model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """OpenAI's list shape."""

    object: Literal["list"] = "list"
    data: list[Model]
