"""``GET /v1/models`` and ``GET /v1/models/{id}``: the served model, in OpenAI's shapes."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import EngineDep, LimitsDep
from app.api.security import require_api_key
from app.schemas.models import Model, ModelList
from app.serving.openai.model_list import list_models as model_list
from app.serving.openai.model_list import served_model
from app.serving.policy import check_model_name

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["models"])


@router.get("/v1/models")
async def list_models(engine: EngineDep) -> ModelList:
    """List the served model."""
    return model_list(engine.model_info())


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, engine: EngineDep, limits: LimitsDep) -> Model:
    """Describe the served model (404 for a name that is not one of its names)."""
    info = engine.model_info()
    check_model_name(model_id, info, limits)
    return served_model(info)
