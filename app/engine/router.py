"""``ModelRouter``: model names to engines, one engine per loaded model.

A request names a model; the router finds its library entry (by id, alias or file name, any
case, with or without ``.gguf`` or ``:latest``) and hands back that model's engine, loading it
first when it is not loaded (concurrent requests for a loading model wait for the same load).
What may stay loaded is bounded by a count (``max_loaded``) and a memory budget (the entries'
estimates): to make room, the least recently used idle model that is not pinned is unloaded.
A model offloaded to a GPU splits its estimate between RAM (``memory_bytes``) and VRAM
(``vram_bytes``); each has its budget. Models also unload after ``idle_unload_s`` without
use, or when a request's ``keep_alive`` runs out (Ollama's; 0 unloads at once). Pinned models
and the default model (the one ``--model`` names, which /health reports on) never unload.
A loaded model's state follows its engine: ``restarting`` while its worker process restarts
after a crash, ``failed`` once it gave up (the worker's reason is ``last_error``).

The router only schedules loads and unloads: each engine is whatever the factory builds (an
in-process ``LlamaEngine`` or an engine in a worker process). Event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from app.engine.protocol import Engine
from app.engine.types import EngineConfig
from app.errors import EngineError, ModelInUse, ModelLoadError, ModelNotFound, Overloaded

logger = logging.getLogger(__name__)

ModelState = Literal["unloaded", "loading", "ready", "restarting", "failed"]
EngineFactory = Callable[[EngineConfig], Engine]


@dataclass(frozen=True)
class ModelEntry:
    """A model of the library: its id, other names, engine settings and memory estimate."""

    id: str
    config: EngineConfig
    names: frozenset[str] = frozenset()  # more names that select it (any case)
    pinned: bool = False
    memory_bytes: int = 0  # weights + KV for its slot configuration in RAM (an estimate)
    vram_bytes: int = 0  # the share of weights + KV offloaded to the GPU (an estimate)


@dataclass(frozen=True)
class ModelStatus:
    """A snapshot of one model for /v1/models, /api/ps, /health and /metrics."""

    entry: ModelEntry
    state: ModelState
    engine: Engine | None
    load_s: float | None
    last_error: str | None
    expires_in_s: float | None  # when it unloads by itself, from now (None: it stays)
    restarts: int = 0  # times its worker process was restarted after a crash


def name_key(name: str) -> str:
    """A model name as the router compares it: case, ``.gguf`` and ``:latest`` dropped."""
    key = name.strip().lower()
    key = key.removesuffix(":latest")
    return key.removesuffix(".gguf")


@dataclass(eq=False)
class _Loaded:
    """The router's state of one model."""

    entry: ModelEntry
    engine: Engine | None = None
    state: ModelState = "unloaded"
    task: asyncio.Task[Engine] | None = None
    last_used: float = 0.0
    expires_at: float | None = None  # keep_alive's deadline (inf: never by time)
    load_s: float | None = None
    last_error: str | None = None


class ModelRouter:
    """Finds, loads and unloads models by name (see the module docstring)."""

    def __init__(
        self,
        entries: Iterable[ModelEntry],
        factory: EngineFactory,
        *,
        default_id: str,
        max_loaded: int = 2,
        memory_budget_bytes: int | None = None,
        vram_budget_bytes: int | None = None,
        idle_unload_s: float | None = None,
        strict_names: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._models = {entry.id: _Loaded(entry) for entry in entries}
        if default_id not in self._models:
            raise ValueError(f"the default model {default_id!r} is not among the entries")
        self._names: dict[str, str] = {}
        self._index_names()
        self._factory = factory
        self.default_id = default_id
        self.max_loaded = max(1, max_loaded)
        self.memory_budget_bytes = memory_budget_bytes
        self.vram_budget_bytes = vram_budget_bytes
        self.idle_unload_s = idle_unload_s
        self.strict_names = strict_names
        self._clock = clock

    # ------------------------------------------------------------------ names
    def _index_names(self) -> None:
        self._names = {}
        for model in self._models.values():
            entry = model.entry
            for name in (entry.id, *entry.names):
                self._names.setdefault(name_key(name), entry.id)

    def update_entries(self, entries: Iterable[ModelEntry]) -> tuple[list[str], list[str]]:
        """Take a rescanned library: new entries join, entries no longer there leave (unless
        loaded, or the default model); known ones keep their state. Returns (added, removed)."""
        fresh = {entry.id: entry for entry in entries}
        added = [i for i in fresh if i not in self._models]
        removed = [
            i
            for i, m in self._models.items()
            if i not in fresh and i != self.default_id and m.engine is None and m.task is None
        ]
        for model_id in removed:
            del self._models[model_id]
        for model_id in added:
            self._models[model_id] = _Loaded(fresh[model_id])
        self._index_names()
        return added, removed

    def forget(self, model_id: str) -> None:
        """Drop an unloaded entry (its file was deleted)."""
        model = self._models.get(model_id)
        if model is not None and model.engine is None and model_id != self.default_id:
            del self._models[model_id]
            self._index_names()

    def resolve(self, name: str | None) -> ModelEntry:
        """The entry ``name`` selects; no name (or, unless strict, an unknown one): the
        default model. Raises ``ModelNotFound`` listing the models otherwise."""
        if name is not None and name.strip():
            found = self._names.get(name_key(name))
            if found is not None:
                return self._models[found].entry
            if self.strict_names:
                known = ", ".join(sorted(self._models))
                raise ModelNotFound(
                    f"The model '{name}' does not exist on this server; available: {known}.",
                    param="model",
                )
        return self._models[self.default_id].entry

    def resolve_strict(self, name: str) -> ModelEntry:
        """The entry ``name`` selects; ``ModelNotFound`` listing the models otherwise."""
        found = self._names.get(name_key(name))
        if found is None:
            known = ", ".join(sorted(self._models))
            raise ModelNotFound(
                f"The model '{name}' is not in the library; available: {known}.", param="model"
            )
        return self._models[found].entry

    def knows(self, name: str) -> bool:
        """Whether ``name`` selects a library model (not the default fallback)."""
        return name_key(name) in self._names

    # ------------------------------------------------------------------ engines
    async def engine(self, name: str | None = None, keep_alive_s: float | None = None) -> Engine:
        """The engine of the model ``name`` selects, loaded first if needed.

        ``keep_alive_s`` (Ollama's): unload this long after the request (0: right after it,
        negative: never by time); None keeps the model's idle policy.
        """
        model = self._models[self.resolve(name).id]
        engine = await self._ensure_loaded(model)
        model.last_used = self._clock()
        if keep_alive_s is not None:
            model.expires_at = math.inf if keep_alive_s < 0 else model.last_used + keep_alive_s
        return engine

    def loaded_engine(self, name: str | None = None) -> Engine | None:
        """The engine of that model if it is loaded and ready, else None (never loads)."""
        model = self._models[self.resolve(name).id]
        return model.engine if model.state == "ready" else None

    def current_engine(self, name: str | None = None) -> Engine | None:
        """That model's engine while it exists (loading, ready or dead), else None."""
        return self._models[self.resolve(name).id].engine

    async def load(self, name: str) -> Engine:
        """Load a model now (``POST /models/load``); no-op when loaded."""
        return await self.engine(name)

    async def unload(self, name: str) -> bool:
        """Unload a model now (``POST /models/unload``, ``keep_alive: 0``); False if it was
        not loaded, is the default model (which always stays: /health reports it) or is
        pinned (pinned models are never unloaded)."""
        model = self._models[self.resolve(name).id]
        if self._kept(model):
            return False
        if model.state not in ("ready", "failed") or model.engine is None:
            return False
        await self._unload(model, "asked")
        return True

    async def release(self, name: str) -> ModelEntry:
        """Unload the model ``name`` names so its file can be removed (``/api/delete``).

        ``ModelNotFound`` for a name outside the library; ``ModelInUse`` for the default
        model, a pinned model, or one that is loading or running requests."""
        model = self._models[self.resolve_strict(name).id]
        entry = model.entry
        if entry.id == self.default_id or entry.pinned:
            why = "the default model" if entry.id == self.default_id else "pinned"
            raise ModelInUse(f"The model '{entry.id}' is {why}; it cannot be removed.")
        if model.state == "loading" or not self._idle(model):
            raise ModelInUse(f"The model '{entry.id}' is in use; retry when it is idle.")
        if model.engine is not None:
            await self._unload(model, "its file is being removed")
        return entry

    async def sweep(self) -> list[str]:
        """Unload models whose keep_alive ran out or that were idle too long; their ids."""
        now = self._clock()
        done = []
        for model in list(self._models.values()):
            if model.state != "ready" or self._kept(model) or not self._idle(model):
                continue
            expired = model.expires_at is not None and now >= model.expires_at
            idle_for = now - model.last_used
            too_idle = (
                model.expires_at is None
                and self.idle_unload_s is not None
                and idle_for >= self.idle_unload_s
            )
            if expired or too_idle:
                await self._unload(model, "keep_alive ran out" if expired else "idle")
                done.append(model.entry.id)
        return done

    async def stop(self) -> None:
        """Stop every engine (shutdown)."""
        for model in self._models.values():
            if model.task is not None and not model.task.done():
                model.task.cancel()
                with contextlib.suppress(BaseException):
                    await model.task
            if model.engine is not None:
                await self._unload(model, "shutdown")

    def status(self) -> list[ModelStatus]:
        """Every model's state, the default model first."""
        now = self._clock()
        order = sorted(self._models.values(), key=lambda m: m.entry.id != self.default_id)
        return [self._status(model, now) for model in order]

    def loaded_count(self) -> int:
        """Models loaded or loading."""
        return sum(1 for m in self._models.values() if m.state in ("ready", "loading"))

    # ------------------------------------------------------------------ internals
    def _status(self, model: _Loaded, now: float) -> ModelStatus:
        expires: float | None = None
        if model.state == "ready" and not self._kept(model):
            if model.expires_at == math.inf:
                expires = None
            elif model.expires_at is not None:
                expires = max(0.0, model.expires_at - now)
            elif self.idle_unload_s is not None:
                expires = max(0.0, model.last_used + self.idle_unload_s - now)
        state, error, restarts = model.state, model.last_error, 0
        if model.state == "ready" and model.engine is not None:
            health = model.engine.health()
            restarts = health.restarts
            if health.state == "restarting":
                state, error = "restarting", health.reason
            elif health.state in ("failed", "dead"):
                state, error = "failed", health.reason or health.state
        return ModelStatus(model.entry, state, model.engine, model.load_s, error, expires, restarts)

    async def _ensure_loaded(self, model: _Loaded) -> Engine:
        if model.state == "ready" and model.engine is not None:
            return model.engine
        if model.task is None or model.task.done():
            await self._make_room(model)
            model.state = "loading"
            model.task = asyncio.create_task(self._load(model), name=f"load-{model.entry.id}")
        # Shielded: a caller that gives up (client gone) does not cancel others' load.
        return await asyncio.shield(model.task)

    async def _load(self, model: _Loaded) -> Engine:
        started = time.perf_counter()
        engine = model.engine = self._factory(model.entry.config)
        try:
            await engine.start()
        except BaseException as exc:
            model.state = "failed"
            model.engine = None
            reason = exc.message if isinstance(exc, EngineError) else f"{type(exc).__name__}"
            model.last_error = reason
            logger.error("model %s failed to load: %s", model.entry.id, reason)
            with contextlib.suppress(Exception):
                await engine.stop()
            if isinstance(exc, EngineError):
                raise
            raise ModelLoadError(
                f"The model '{model.entry.id}' ({model.entry.config.model_path}) could not be "
                f"loaded: {reason}",
                param="model",
            ) from exc
        model.engine = engine
        model.state = "ready"
        model.last_error = None
        model.load_s = time.perf_counter() - started
        model.last_used = self._clock()
        logger.info("model %s loaded in %.1f s", model.entry.id, model.load_s)
        return engine

    async def _make_room(self, incoming: _Loaded) -> None:
        """Unload least recently used idle models until ``incoming`` fits."""
        while not self._fits(incoming):
            victim = self._victim(incoming)
            if victim is None:
                raise Overloaded(
                    self.loaded_count(),
                    self.max_loaded,
                    retry_after_s=5,
                ) from None
            await self._unload(victim, f"making room for {incoming.entry.id}")

    def _fits(self, incoming: _Loaded) -> bool:
        others = [m for m in self._models.values() if m is not incoming]
        loaded = [m for m in others if m.state in ("ready", "loading")]
        if len(loaded) + 1 > self.max_loaded:
            return False
        # A model larger than a whole budget may still load alone.
        entry = incoming.entry
        for budget, need, used in (
            (self.memory_budget_bytes, entry.memory_bytes, [m.entry.memory_bytes for m in loaded]),
            (self.vram_budget_bytes, entry.vram_bytes, [m.entry.vram_bytes for m in loaded]),
        ):
            if budget is not None and loaded and need and sum(used) + need > budget:
                return False
        return True

    def _victim(self, incoming: _Loaded) -> _Loaded | None:
        candidates = [
            m
            for m in self._models.values()
            if m is not incoming and m.state == "ready" and not self._kept(m) and self._idle(m)
        ]
        return min(candidates, key=lambda m: m.last_used, default=None)

    def _kept(self, model: _Loaded) -> bool:
        """Pinned models and the default model are never unloaded by time or for room."""
        return model.entry.pinned or model.entry.id == self.default_id

    @staticmethod
    def _idle(model: _Loaded) -> bool:
        engine = model.engine
        return engine is None or engine.stats().requests_active == 0

    async def _unload(self, model: _Loaded, why: str) -> None:
        engine, model.engine = model.engine, None
        model.state = "unloaded"
        model.expires_at = None
        model.task = None
        if engine is not None:
            logger.info("unloading model %s (%s)", model.entry.id, why)
            try:
                await engine.stop()
            except Exception:
                logger.exception("model %s did not stop cleanly", model.entry.id)
