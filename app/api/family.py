"""A route family: one API contract (OpenAI, CRIA, Ollama, TGI, llama-server's extras) as a unit.

A family declares, in its routes module, everything the app needs to serve it: its routers,
the request bodies documented in OpenAPI (routes that read their body by hand), and its
error shape - how the shared error table's answer (status, OpenAI-style detail) is written
for its clients, both as a response body and as the last event or line of a stream that
failed. The app includes each family's routers in list order, and the error handlers ask
the family of the matched route for the body's shape: no URL tables.

Adding a family: its wire models (``app/schemas/``), its serving folder (``app/serving/<name>/``),
one routes module exporting ``FAMILY``, and one line in ``app.api.app.FAMILIES``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from app.schemas.common import ErrorDetail, ErrorResponse

ErrorShape = Callable[[ErrorDetail, int], BaseModel]
"""Writes the error detail and the status as the family's clients expect the body."""


def openai_error_shape(detail: ErrorDetail, _: int) -> BaseModel:
    """OpenAI's body: ``{"error": {"message", "type", "param", "code"}}``."""
    return ErrorResponse(error=detail)


@dataclass(frozen=True)
class RouteFamily:
    """One API contract: its routers, documented bodies and error shape."""

    name: str
    routers: tuple[APIRouter, ...]
    body_models: tuple[type[BaseModel], ...] = ()  # bodies read by hand, added to OpenAPI
    error_shape: ErrorShape = openai_error_shape
    stream_error_event: str | None = None  # SSE ``event:`` name of a failed stream's last event

    def error_body(self, detail: ErrorDetail, status: int) -> dict[str, Any]:
        """The JSON body of an error answer."""
        return self.error_shape(detail, status).model_dump()

    def error_json(self, detail: ErrorDetail, status: int) -> str:
        """The same body as JSON text: the data of a failed stream's last event or line."""
        return self.error_shape(detail, status).model_dump_json()


DEFAULT_FAMILY = RouteFamily("openai", ())
"""The shape of answers no family's route produced (unknown paths)."""


class FamilyTable:
    """Which family each route belongs to, found from the route that matches a request."""

    def __init__(self, families: Iterable[RouteFamily], routes: Sequence[BaseRoute]) -> None:
        self._by_endpoint: dict[Callable[..., Any], RouteFamily] = {}
        self._by_router: dict[int, RouteFamily] = {}
        for family in families:
            for router in family.routers:
                self._by_router[id(router)] = family
                for route in router.routes:
                    endpoint = getattr(route, "endpoint", None)
                    if endpoint is not None:  # endpoints survive include_router
                        self._by_endpoint[endpoint] = family
        self._routes = routes

    def family_of(self, scope: Scope) -> RouteFamily:
        """The family of the route that matched (or, before routing - in a middleware -
        would match) ``scope``, partial matches (a 405) included; else the default family."""
        family = self._family_of_route(scope.get("route"))
        if family is None:
            family = self._family_of_route(self._match(scope))
        return family or DEFAULT_FAMILY

    def _family_of_route(self, route: object) -> RouteFamily | None:
        # A route of a family's router, or (FastAPI 0.16x) the included router itself.
        endpoint = getattr(route, "endpoint", None)
        if endpoint is not None and endpoint in self._by_endpoint:
            return self._by_endpoint[endpoint]
        router = getattr(route, "original_router", None)
        return self._by_router.get(id(router)) if router is not None else None

    def _match(self, scope: Scope) -> BaseRoute | None:
        if scope.get("type") != "http":
            return None
        partial = None
        for route in self._routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
            if match is Match.PARTIAL and partial is None:
                partial = route
        return partial


def family_of(scope: Scope) -> RouteFamily:
    """The family of ``scope``'s route, from the table the app keeps (default without one)."""
    app = scope.get("app")
    table: FamilyTable | None = getattr(getattr(app, "state", None), "families", None)
    return table.family_of(scope) if table is not None else DEFAULT_FAMILY
