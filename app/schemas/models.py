"""``GET /v1/models``, ``POST /models/load`` and ``POST /models/unload`` wire types."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from app.schemas.common import WireRequest


class Model(BaseModel):
    """One served model (a LoRA adapter names its base model in ``parent``, as vLLM does)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    state: Literal["loaded", "loading", "unloaded", "restarting", "failed"] | None = (
        None  # this server's
    )
    parent: str | None = Field(None, description="The base model of a LoRA adapter.")
    root: str | None = Field(None, description="A LoRA adapter's file.")

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("parent", "root"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


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
