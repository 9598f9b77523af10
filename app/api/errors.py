"""The one table from errors to HTTP statuses and OpenAI-style details, and its handlers.

Every error answer, before or after a stream started, carries the same detail
(``{"message", "type", "param", "code"}``), written in the error shape of the route family
whose route matched (``app.api.family``: OpenAI's ``{"error": {...}}`` by default). Nothing
here looks at exception text or at the URL: the class decides the status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.family import DEFAULT_FAMILY, RouteFamily, family_of
from app.api.metrics import HttpMetrics, retry_after_estimate
from app.errors import (
    ContextLengthExceeded,
    DownloadFailed,
    EngineCrashed,
    EngineDead,
    EngineError,
    EngineNotReady,
    GenerationFailed,
    InvalidRequest,
    ModelInUse,
    ModelLoadError,
    ModelNotFound,
    NotFound,
    Overloaded,
    RequestCancelled,
)
from app.schemas.common import ErrorDetail, ErrorResponse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorSpec:
    """How one kind of error is answered."""

    status: int
    type: str
    code: str | None = None


class ApiError(Exception):
    """An error of the HTTP layer itself (auth, body size, unknown route)."""

    spec = ErrorSpec(400, "invalid_request_error")

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class Unauthorized(ApiError):
    """Missing or wrong API key."""

    spec = ErrorSpec(401, "invalid_request_error", "invalid_api_key")


class HostNotAllowed(ApiError):
    """The ``Host`` header names no address of this server (DNS rebinding)."""

    spec = ErrorSpec(403, "permission_error", "host_not_allowed")


class OriginNotAllowed(ApiError):
    """A cross-origin write from a page whose origin is not in the CORS allowlist."""

    spec = ErrorSpec(403, "permission_error", "origin_not_allowed")


class ServerDraining(ApiError):
    """The server is shutting down: it finishes running requests and takes no new ones."""

    spec = ErrorSpec(503, "server_error", "server_shutting_down")


class PayloadTooLarge(ApiError):
    """The request body is larger than ``max_body_bytes``."""

    spec = ErrorSpec(413, "invalid_request_error", "request_too_large")


ERROR_TABLE: Mapping[type[EngineError], ErrorSpec] = {
    ContextLengthExceeded: ErrorSpec(400, "invalid_request_error", "context_length_exceeded"),
    InvalidRequest: ErrorSpec(400, "invalid_request_error"),
    ModelNotFound: ErrorSpec(404, "invalid_request_error", "model_not_found"),
    NotFound: ErrorSpec(404, "invalid_request_error", "not_found"),
    Overloaded: ErrorSpec(429, "rate_limit_error", "queue_full"),
    EngineNotReady: ErrorSpec(503, "server_error", "model_loading"),
    EngineDead: ErrorSpec(503, "server_error", "engine_dead"),
    EngineCrashed: ErrorSpec(503, "server_error", "engine_crashed"),
    ModelLoadError: ErrorSpec(503, "server_error", "model_load_failed"),
    DownloadFailed: ErrorSpec(502, "server_error", "download_failed"),
    ModelInUse: ErrorSpec(409, "invalid_request_error", "model_in_use"),
    # The engine cancels a request someone still reads only when it stops (shutdown).
    RequestCancelled: ErrorSpec(503, "server_error", "server_shutting_down"),
    GenerationFailed: ErrorSpec(500, "server_error", "generation_failed"),
    EngineError: ErrorSpec(500, "server_error"),
}
INTERNAL = ErrorSpec(500, "server_error", "internal_error")
INTERNAL_MESSAGE = "The server had an internal error while processing the request."
LOADING_RETRY_AFTER_S = 5
DRAINING_RETRY_AFTER_S = 5  # by then a replacement is usually up (or a peer takes the retry)


def spec_for(exc: BaseException) -> ErrorSpec:
    """The table entry of the nearest class of ``exc`` (unknown errors: 500)."""
    if isinstance(exc, ApiError):
        return exc.spec
    for cls in type(exc).__mro__:
        spec = ERROR_TABLE.get(cls)
        if spec is not None:
            return spec
    return INTERNAL


def error_body(exc: BaseException) -> ErrorResponse:
    """The OpenAI error body for ``exc``; unexpected errors say nothing about internals."""
    spec = spec_for(exc)
    if isinstance(exc, EngineError | ApiError):
        detail = ErrorDetail(message=exc.message, type=spec.type, param=exc.param, code=spec.code)
    else:
        detail = ErrorDetail(message=INTERNAL_MESSAGE, type=spec.type, code=spec.code)
    return ErrorResponse(error=detail)


def retry_after(exc: BaseException) -> int | None:
    """Seconds a client should wait before retrying, when that is known."""
    if isinstance(exc, Overloaded):
        return max(1, exc.retry_after_s)
    if isinstance(exc, EngineNotReady | EngineCrashed):
        return LOADING_RETRY_AFTER_S
    if isinstance(exc, ServerDraining | RequestCancelled):
        return DRAINING_RETRY_AFTER_S
    return None


def family_error_data(family: RouteFamily) -> Callable[[BaseException], str]:
    """The data of the last event (or line) of a ``family`` stream that failed with ``exc``."""

    def data(exc: BaseException) -> str:
        return family.error_json(error_body(exc).error, spec_for(exc).status)

    return data


def error_response(exc: BaseException, family: RouteFamily = DEFAULT_FAMILY) -> JSONResponse:
    """A JSON error response for ``exc`` (with ``Retry-After`` or ``WWW-Authenticate``)."""
    spec = spec_for(exc)
    headers: dict[str, str] = {}
    wait = retry_after(exc)
    if wait is not None:
        headers["Retry-After"] = str(wait)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, ServerDraining):
        headers["Connection"] = "close"  # reconnect, through the load balancer, elsewhere
    body = family.error_body(error_body(exc).error, spec.status)
    return JSONResponse(body, status_code=spec.status, headers=headers)


def validation_error(errors: Sequence[Any]) -> InvalidRequest:
    """One clear ``InvalidRequest`` from pydantic's error list (the first error)."""
    if not errors:
        return InvalidRequest("The request body is invalid.")
    first = _field_path(errors[0])
    # A union field reports one error per member; the deepest one says the most.
    related = [e for e in errors if _field_path(e)[: len(first)] == first]
    chosen = max(related, key=lambda e: len(_field_path(e)))
    param = ".".join(_field_path(chosen)) or None
    message = str(chosen.get("msg", "invalid value")).removeprefix("Value error, ")
    return InvalidRequest(f"{param}: {message}" if param else message, param=param)


def _field_path(error: Any) -> list[str]:
    parts = [str(part) for part in error.get("loc", ()) if _is_field(part)]
    return parts[1:] if parts and parts[0] == "body" else parts


def _is_field(part: object) -> bool:
    # Union members show up in error locations ("str", "list[TextContentPart]"); skip them.
    if isinstance(part, int):
        return True
    text = str(part)
    return "[" not in text and text not in {"str", "int", "float", "bool", "list", "dict"}


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, Overloaded):
        exc = _with_wait_estimate(request, exc)
    return error_response(exc, _family(request))


def _family(request: Request) -> RouteFamily:
    return family_of(request.scope)


def _with_wait_estimate(request: Request, exc: Overloaded) -> Overloaded:
    """``exc`` with Retry-After estimated from the queue and the mean generation time."""
    metrics: HttpMetrics = request.app.state.http_metrics
    engine = request.app.state.runtime.engine
    stats = engine.stats() if engine is not None else None
    waiting = max(exc.queue_length, stats.queue_length if stats is not None else 0)
    slots = stats.slots_total if stats is not None else 1
    # A retry joins the end of the queue: everyone waiting, then itself, must get a slot.
    wait = retry_after_estimate(waiting + 1, slots, metrics.generation_s.value)
    return Overloaded(exc.queue_length, exc.max_queue, retry_after_s=wait)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(validation_error(exc.errors()), _family(request))


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    detail = ErrorDetail(message=str(exc.detail), type=kind, code=code)
    body = _family(request).error_body(detail, exc.status_code)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(exc, _family(request))


def install_error_handlers(app: FastAPI) -> None:
    """Route every error kind to its OpenAI-style answer."""
    app.add_exception_handler(EngineError, _on_api_error)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
