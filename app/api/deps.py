"""Typed dependencies: routes reach the engine and settings through these, never globals."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import ValidationError

from app.api.errors import validation_error
from app.api.middleware import new_request_id
from app.api.runtime import EngineRuntime
from app.engine.errors import InvalidRequest
from app.engine.protocol import Engine
from app.models.builtin import BUILTIN_MODELS
from app.schemas.common import WireRequest
from app.serving.generation import FinishSink
from app.serving.sampling import Finished, Limits
from app.settings import Settings

W = TypeVar("W", bound=WireRequest)


def get_runtime(request: Request) -> EngineRuntime:
    """The app's engine runtime."""
    runtime: EngineRuntime = request.app.state.runtime
    return runtime


def get_engine(request: Request) -> Engine:
    """The engine, if it is ready (else 503 through the error table)."""
    return get_runtime(request).ready_engine()


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_limits(request: Request) -> Limits:
    """The settings the serving layer applies to each request."""
    settings = get_settings(request)
    return Limits(
        max_tokens_limit=settings.max_tokens_limit,
        default_max_tokens=settings.default_max_tokens,
        cria_max_tokens=settings.cria_max_tokens,
        system_prompt=settings.system_prompt,
        model_aliases=model_aliases(settings),
        strict_model_names=settings.strict_model_names,
        context_overflow=settings.context_overflow,
    )


def model_aliases(settings: Settings) -> frozenset[str]:
    """Names that mean the served model besides its id: the --model reference, as typed
    (``smollm2``, a path, ``hf://...``), its alias, and built-in names of the same file."""
    names = {settings.model, Path(settings.model).name, Path(settings.model).stem}
    names |= {name for name, spec in BUILTIN_MODELS.items() if spec.filename in names}
    if settings.model_alias:
        names.add(settings.model_alias)
    return frozenset(name.strip().lower() for name in names if name.strip())


def get_request_id(request: Request) -> str:
    """The id the logging middleware gave this request."""
    request_id = getattr(request.state, "request_id", None)
    return request_id if isinstance(request_id, str) else new_request_id()


EngineDep = Annotated[Engine, Depends(get_engine)]
RuntimeDep = Annotated[EngineRuntime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
LimitsDep = Annotated[Limits, Depends(get_limits)]
RequestIdDep = Annotated[str, Depends(get_request_id)]


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, whatever the Content-Type says (CRIA sends text/plain)."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("The request body is empty: send a JSON object.")
    try:
        # Decoded strictly here: json.loads(bytes) would let UTF-8-encoded surrogates through.
        text = raw.decode(json.detect_encoding(raw))
        body = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and undecodable bytes
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidRequest("The request body is nested too deeply.") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if LONE_SURROGATE_ESCAPE.search(text):
        _reject_lone_surrogates(body)
    return body


# ``\ud800``-style escapes: JSON allows them, but a lone one is no Unicode text (it cannot be
# encoded as UTF-8, so it would fail deep in tokenization). Pairs decode to one character.
LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    # Python's json takes NaN, Infinity and -Infinity; JSON (and OpenAI) do not.
    raise ValueError(f"{name} is not a JSON value")


def _reject_lone_surrogates(body: dict[str, Any]) -> None:
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            "The request body holds a lone UTF-16 surrogate escape (such as \\ud800), "
            "which is not valid Unicode text."
        ) from exc


def parse_body(model: type[W], body: dict[str, Any]) -> W:
    """``body`` validated as ``model``; the first problem becomes a 400 naming its field.

    (Only request bodies: a ValidationError anywhere else is a bug and stays a 500.)
    """
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from exc


def usage_recorder(request: Request) -> FinishSink:
    """A callback that leaves a request's token counts for the log line."""

    def record(finished: Finished) -> None:
        request.state.finished = finished

    return record
