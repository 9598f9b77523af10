"""OpenAI's ``/v1/models`` bodies from the engine's facts."""

from __future__ import annotations

import time
from collections.abc import Sequence

from app.engine.router import ModelState, ModelStatus
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


WIRE_STATE = {"ready": "loaded", "loading": "loading", "unloaded": "unloaded", "failed": "failed"}


def library_model(status: ModelStatus) -> Model:
    """A library model as an OpenAI model object, with whether it is loaded."""
    owner = "cria-server"
    if status.state == "ready" and status.engine is not None:
        owner = status.engine.model_info().metadata.get("general.organization") or owner
    state: ModelState = status.state
    return Model(id=status.entry.id, created=_STARTED, owned_by=owner, state=WIRE_STATE[state])


def library_list(statuses: Sequence[ModelStatus]) -> ModelList:
    """OpenAI's model list: every model of the library, the default one first."""
    return ModelList(data=[library_model(status) for status in statuses])
