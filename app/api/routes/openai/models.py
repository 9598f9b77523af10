"""``GET /v1/models`` and ``GET /v1/models/{id}``: the model library, in OpenAI's shapes."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import EngineDep, LimitsDep, RuntimeDep
from app.api.security import require_api_key
from app.schemas.models import Model, ModelList
from app.serving.openai.model_list import (
    adapter_model,
    library_adapter,
    library_list,
    library_model,
    served_model,
)
from app.serving.openai.model_list import list_models as model_list
from app.serving.policy import check_model_name, find_adapter

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["models"])


@router.get("/v1/models")
async def list_models(runtime: RuntimeDep) -> ModelList:
    """List the models of the library (each with its LoRA adapters), whether each is loaded
    (also while a model, the default one included, is restarting or failed)."""
    runtime.check_listing()
    if runtime.router is None:
        return model_list(runtime.ready_engine().model_info())
    return library_list(runtime.router.status())


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(
    model_id: str, runtime: RuntimeDep, engine: EngineDep, limits: LimitsDep
) -> Model:
    """Describe a model of the library or a LoRA adapter (404 for a name that selects none)."""
    router = runtime.router
    if router is not None:
        adapter = library_adapter(router.status(), model_id)
        if adapter is not None:
            return adapter
    if router is not None and router.knows(model_id):
        entry = router.resolve(model_id)
        (status,) = [s for s in router.status() if s.entry.id == entry.id]
        return library_model(status)
    info = engine.model_info()
    check_model_name(model_id, info, limits)
    found = find_adapter(model_id, info)
    return served_model(info) if found is None else adapter_model(found, info.name)
