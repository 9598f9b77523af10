"""Typed dependencies: routes reach the engine and settings through these, never globals."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Request, Response
from pydantic import BaseModel, ValidationError

from app.api.affinity import remember_body_key
from app.api.disconnect import CLIENT_CLOSED_REQUEST, ClientGone, unless_disconnected
from app.api.errors import family_error_data, validation_error
from app.api.family import RouteFamily, family_of
from app.api.middleware import new_request_id
from app.api.ndjson import NdjsonResponse
from app.api.runtime import EngineRuntime
from app.api.sse import DONE, Chunk, StreamResponse, close_iterators
from app.engine.protocol import Engine
from app.engine.stream import EventStream
from app.engine.types import GenerationRequest
from app.errors import InvalidRequest
from app.models.builtin import BUILTIN_MODELS
from app.schemas.common import WireRequest
from app.serving.generation import Finished, FinishSink, pieces
from app.serving.policy import Limits
from app.serving.schema_check import SchemaPolicy
from app.settings import Settings

W = TypeVar("W", bound=WireRequest)
T = TypeVar("T")


class Plan(Protocol):
    """What a route family's plan function returns: at least the engine request."""

    @property
    def request(self) -> GenerationRequest:
        """The generation the plan asks the engine for."""
        ...


P = TypeVar("P", bound=Plan)


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
        tool_call_format=settings.tool_call_format,
        reasoning_format=settings.reasoning_format,
        reasoning_budget=settings.reasoning_budget,
        schemas=SchemaPolicy(
            strict=settings.strict_schemas,
            max_items=settings.json_max_items,
            max_string=settings.json_max_string,
        ),
        parse_special_in_content=settings.parse_special_in_content,
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
    body = await json_value(request)
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    remember_body_key(request, body)  # prompt_cache_key/user: echoed as X-Session-Id
    return body


async def json_value(request: Request) -> Any:
    """The body as any JSON value (an array for llama-server's ``POST /lora-adapters``)."""
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
    if LONE_SURROGATE_ESCAPE.search(text):
        _reject_lone_surrogates(body)
    return body


# ``\ud800``-style escapes: JSON allows them, but a lone one is no Unicode text (it cannot be
# encoded as UTF-8, so it would fail deep in tokenization). Pairs decode to one character.
LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    # Python's json takes NaN, Infinity and -Infinity; JSON (and OpenAI) do not.
    raise ValueError(f"{name} is not a JSON value")


def _reject_lone_surrogates(body: Any) -> None:
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


class Call:
    """One API call: its request, engine, settings, limits and id, and the engine streams it
    started. Routes go parse -> plan -> ``start`` -> frame (``sse``, ``ndjson``, ``json``);
    the framing methods close every stream this call started when the response ends, however
    it ends, which aborts a generation its client no longer reads."""

    def __init__(self, request: Request, settings: Settings, request_id: str) -> None:
        self.request = request
        self.settings = settings
        self.request_id = request_id
        self.limits = get_limits(request)
        self._streams: list[EventStream] = []
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """The engine this call uses: the one ``model_engine`` chose, else the default
        model's, if it takes requests (else the error that says why not: 503)."""
        if self._engine is not None:
            return self._engine
        return get_engine(self.request)

    async def model_engine(self, name: str | None, keep_alive_s: float | None = None) -> Engine:
        """The engine of the model ``name`` selects, loaded first when needed (the default
        model for no name, and for unknown names unless names are strict); this call's
        engine from now on."""
        self._engine = await get_runtime(self.request).engine_for(name, keep_alive_s)
        return self._engine

    @property
    def family(self) -> RouteFamily:
        """The route family of the matched route."""
        return family_of(self.request.scope)

    async def body(self, model: type[W]) -> W:
        """The JSON body validated as ``model`` (400 naming the first bad field)."""
        return parse_body(model, await json_object(self.request))

    async def off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in a worker thread: request-controlled heavy work (rendering a
        chat template, fitting a long chat, tokenizing, compiling a grammar) never blocks the
        event loop, which serves every other stream and ``/health`` meanwhile."""
        return await asyncio.to_thread(work, *args)

    async def start_events(self, request: GenerationRequest) -> EventStream:
        """Compile ``request``'s grammar and tokenize its prompt in a worker thread, then
        submit it to the engine; its handle is closed with this call's response."""
        engine = self.engine
        return self._submit(engine, await self.off_loop(_prepared, engine, request))

    async def start_planned(
        self, plan: Callable[..., P], *args: Any
    ) -> tuple[P, AsyncIterator[str | Finished]]:
        """``plan(*args)``, then its request started as ``start`` does, with the plan and the
        request's preparation in one worker-thread hop: the plan's own heavy work (rendering
        the chat template, fitting the chat, checking a JSON schema against its meta-schema)
        and the request's (converting and compiling the grammar, tokenizing) never run on the
        event loop, and cost one hop together, cached or not."""
        engine = self.engine
        planned, request = await self.off_loop(_planned, engine, plan, args)
        stream = self._submit(engine, request)
        return planned, pieces(stream, usage_recorder(self.request))

    def _submit(self, engine: Engine, request: GenerationRequest) -> EventStream:
        stream = engine.submit(request)
        self._streams.append(stream)
        return stream

    async def start(self, request: GenerationRequest) -> AsyncIterator[str | Finished]:
        """Submit ``request``; its text pieces, then one ``Finished`` (logged with the call)."""
        return pieces(await self.start_events(request), usage_recorder(self.request))

    def sse(
        self,
        chunks: AsyncIterator[Chunk],
        *,
        headers: Mapping[str, str] | None = None,
        done: str | None = DONE,
    ) -> StreamResponse:
        """An SSE response over ``chunks``, failing with the family's error event."""
        family = self.family
        return StreamResponse(
            chunks,
            keepalive_s=self.settings.keepalive_s,
            headers=headers,
            done=done,
            error_data=family_error_data(family),
            error_name=family.stream_error_event,
            closing=self._streams,
        )

    def ndjson(self, lines: AsyncIterator[BaseModel]) -> NdjsonResponse:
        """An NDJSON response over ``lines``, failing with the family's error line."""
        return NdjsonResponse(
            lines, error_data=family_error_data(self.family), closing=self._streams
        )

    async def result(self, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work``; ``ClientGone`` if the client leaves first. Closes the streams."""
        try:
            return await unless_disconnected(self.request, work)
        finally:
            await close_iterators(*self._streams)

    async def json(
        self, work: Coroutine[Any, Any, BaseModel], headers: Mapping[str, str] | None = None
    ) -> Response:
        """The JSON answer ``work`` builds, or a bare 499 if the client left first."""
        try:
            result = await self.result(work)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return Response(result.model_dump_json(), media_type="application/json", headers=headers)


def get_call(request: Request, settings: SettingsDep, request_id: RequestIdDep) -> Call:
    """The per-call object of this request."""
    return Call(request, settings, request_id)


CallDep = Annotated[Call, Depends(get_call)]


def _planned(
    engine: Engine, plan: Callable[..., P], args: tuple[Any, ...]
) -> tuple[P, GenerationRequest]:
    """A plan and its request prepared (worker thread)."""
    planned = plan(*args)
    return planned, _prepared(engine, planned.request)


def _prepared(engine: Engine, request: GenerationRequest) -> GenerationRequest:
    """The up-front work of a request (worker thread): its grammar converted and compiled
    (``InvalidRequest`` if bad; cached for ``submit``), its prompt tokenized."""
    grammar = request.sampling.grammar
    if grammar is not None:
        engine.check_grammar(grammar)
    return engine.prepare(request)
