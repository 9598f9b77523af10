"""OpenAI's ``/v1/models`` bodies from the engine's facts."""

from __future__ import annotations

import time

from app.engine.types import ModelInfo
from app.schemas.models import Model, ModelList

_STARTED = int(time.time())


def list_models(info: ModelInfo) -> ModelList:
    """OpenAI's model list: the one served model."""
    return ModelList(data=[served_model(info)])


def served_model(info: ModelInfo) -> Model:
    """The served model as an OpenAI model object."""
    owner = info.metadata.get("general.organization") or "cria-server"
    return Model(id=info.name, created=_STARTED, owned_by=owner)
