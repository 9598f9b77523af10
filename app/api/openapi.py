"""OpenAPI text for routes that read their JSON body themselves.

The chat route reads its body by hand (CRIA's frontend sends JSON as text/plain), so
FastAPI cannot see the body model: the schemas are added to the document here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app.schemas.common import ErrorResponse

REF = "#/components/schemas/{model}"

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Invalid request, or the prompt does not fit the context"),
        (401, "Missing or wrong API key"),
        (404, "Unknown model"),
        (413, "Request body too large"),
        (429, "Queue full; see Retry-After"),
        (503, "Model loading, or the engine stopped"),
    )
}


def json_body(*models: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON body that is one of ``models``."""
    refs = [{"$ref": REF.format(model=model.__name__)} for model in models]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def install_openapi(app: FastAPI, body_models: list[type[BaseModel]]) -> None:
    """Generate the document with ``body_models`` (and their parts) among the components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in body_models:
                schema = model.model_json_schema(ref_template=REF)
                for name, part in schema.pop("$defs", {}).items():
                    schemas.setdefault(name, part)
                schemas[model.__name__] = schema
            _drop_validation_responses(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _drop_validation_responses(document: dict[str, Any]) -> None:
    """FastAPI documents a 422 for routes with parameters; this server answers 400 instead
    (with OpenAI's error body, like every other error), so the 422 is taken out."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
