"""``GET /v1/models`` and ``GET /v1/models/{id}``: the model library, in OpenAI's shapes."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import EngineDep, LimitsDep, RuntimeDep
from app.api.security import require_api_key
from app.schemas.models import Model, ModelList
from app.serving.openai.model_list import library_list, library_model, served_model
from app.serving.openai.model_list import list_models as model_list
from app.serving.policy import check_model_name

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["models"])


@router.get("/v1/models")
async def list_models(runtime: RuntimeDep, engine: EngineDep) -> ModelList:
    """List the models of the library, with whether each is loaded."""
    if runtime.router is None:
        return model_list(engine.model_info())
    return library_list(runtime.router.status())


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(
    model_id: str, runtime: RuntimeDep, engine: EngineDep, limits: LimitsDep
) -> Model:
    """Describe a model of the library (404 for a name that selects none)."""
    router = runtime.router
    if router is not None and router.knows(model_id):
        entry = router.resolve(model_id)
        (status,) = [s for s in router.status() if s.entry.id == entry.id]
        return library_model(status)
    info = engine.model_info()
    check_model_name(model_id, info, limits)
    return served_model(info)
