"""OpenAI's ``/v1/models`` bodies from the engine's facts (and the model library's).

LoRA adapters are models of their own: each follows its base model in the list, with
``parent`` (the base's id) and ``root`` (the adapter's file), as vLLM lists them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from app.engine.router import ModelState, ModelStatus, name_key
from app.engine.types import LoraAdapter, ModelInfo
from app.schemas.models import Model, ModelList

_STARTED = int(time.time())


def list_models(info: ModelInfo) -> ModelList:
    """OpenAI's model list: the one served model and the LoRA adapters on it."""
    adapters = [adapter_model(a, info.name, _owner(info)) for a in info.adapters]
    return ModelList(data=[served_model(info), *adapters])


def served_model(info: ModelInfo) -> Model:
    """The served model as an OpenAI model object."""
    return Model(id=info.name, created=_STARTED, owned_by=_owner(info))


def adapter_model(adapter: LoraAdapter, base: str, owner: str = "cria-server") -> Model:
    """A LoRA adapter as an OpenAI model object, with its base model."""
    return Model(id=adapter.name, created=_STARTED, owned_by=owner, parent=base, root=adapter.path)


def _owner(info: ModelInfo) -> str:
    return info.metadata.get("general.organization") or "cria-server"


WIRE_STATE = {
    "ready": "loaded",
    "loading": "loading",
    "unloaded": "unloaded",
    "restarting": "restarting",
    "failed": "failed",
}


def library_model(status: ModelStatus) -> Model:
    """A library model as an OpenAI model object, with whether it is loaded."""
    owner = "cria-server"
    if status.state == "ready" and status.engine is not None:
        owner = status.engine.model_info().metadata.get("general.organization") or owner
    state: ModelState = status.state
    return Model(id=status.entry.id, created=_STARTED, owned_by=owner, state=WIRE_STATE[state])


def model_adapters(status: ModelStatus) -> tuple[LoraAdapter, ...]:
    """A library model's LoRA adapters: its engine's once loaded, else from its settings
    (so they are listed before the model loads)."""
    if status.state == "ready" and status.engine is not None:
        return status.engine.model_info().adapters
    return status.entry.config.lora


def _library_adapters(statuses: Sequence[ModelStatus]) -> Iterator[tuple[LoraAdapter, Model]]:
    """Each library model's LoRA adapters as OpenAI model objects."""
    for status in statuses:
        for adapter in model_adapters(status):
            model = adapter_model(adapter, status.entry.id)
            yield adapter, model.model_copy(update={"state": WIRE_STATE[status.state]})


def library_list(statuses: Sequence[ModelStatus]) -> ModelList:
    """OpenAI's model list: every model of the library, the default one first, each followed
    by its LoRA adapters."""
    data: list[Model] = []
    for status in statuses:
        data.append(library_model(status))
        data.extend(model for _, model in _library_adapters([status]))
    return ModelList(data=data)


def library_adapter(statuses: Sequence[ModelStatus], name: str) -> Model | None:
    """The LoRA adapter of a library model that ``name`` (any case) names, if any."""
    key = name_key(name)
    return next((m for a, m in _library_adapters(statuses) if name_key(a.name) == key), None)
