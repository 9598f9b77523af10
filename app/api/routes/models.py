"""``GET /v1/models``: the served model, in OpenAI's list shape."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.deps import EngineDep
from app.api.security import require_api_key
from app.schemas.models import Model, ModelList
from app.serving.models import list_models as model_list
from app.serving.models import served_model
from app.serving.sampling import served_model_name

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["models"])


@router.get("/v1/models")
async def list_models(engine: EngineDep) -> ModelList:
    """List the served model."""
    return model_list(engine.model_info())


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, engine: EngineDep) -> Model:
    """Describe the served model (404 for any other name)."""
    info = engine.model_info()
    served_model_name(model_id, info)
    return served_model(info)
