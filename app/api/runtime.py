"""The engine's life in the app: resolve and load in the background, report, drain, stop.

Loading never blocks startup: while it runs, /health answers 503 "loading" and the
other routes answer 503, so an orchestrator sees a live process that is not ready yet.
Draining (on SIGTERM/SIGINT, see ``app.serve``) is the mirror image: new requests get 503
and /health says "draining" while the running requests finish, up to a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from app.api.errors import ServerDraining
from app.api.library import (
    default_model_id,
    free_vram,
    memory_budget,
    model_names,
    read_library,
    rescan,
    vram_budget,
)
from app.engine.protocol import Engine
from app.engine.router import ModelEntry, ModelRouter
from app.engine.types import EngineConfig, EngineHealth
from app.errors import EngineDead, EngineError, EngineNotReady, ModelInUse, ModelLoadError
from app.logging_setup import configure_logging
from app.settings import Settings

logger = logging.getLogger(__name__)

RouterFactory = Callable[[Settings], Awaitable[ModelRouter]]


def single_model_router(settings: Settings, engine: Engine) -> ModelRouter:
    """A router over one given engine (tests, embedders of the app): no library."""
    entry = ModelEntry(
        default_model_id(settings),
        EngineConfig(model_path=settings.model),
        names=model_names(settings),
        pinned=True,
    )
    return ModelRouter([entry], lambda _: engine, default_id=entry.id, max_loaded=1)


async def build_library_router(settings: Settings) -> ModelRouter:
    """Resolve the --model model (may download), scan the models folder and read the free
    VRAM; one router over them, each model served by a llama engine built when first needed."""
    free = await free_vram()
    entries = await read_library(settings, has_gpu=free is not None)
    return ModelRouter(
        entries,
        engine_factory(settings),
        default_id=entries[0].id,
        max_loaded=settings.max_loaded_models,
        memory_budget_bytes=memory_budget(settings),
        vram_budget_bytes=vram_budget(settings, free),
        idle_unload_s=settings.idle_unload or None,
        strict_names=settings.strict_model_names,
    )


def engine_factory(settings: Settings) -> Callable[[EngineConfig], Engine]:
    """How each model's engine is built: in a worker process of its own
    (``--engine-process on``, the default) or in this process."""
    from app.engine.remote import WorkerEngine
    from app.engine.service import LlamaEngine

    if settings.engine_process == "off":
        return LlamaEngine
    setup = functools.partial(configure_logging, settings.log_level, settings.log_format)
    return functools.partial(WorkerEngine, setup_logging=setup)


SWEEP_INTERVAL_S = 1.0


def _remove_inside(entry: ModelEntry, models_dir: Path) -> Path:
    """Delete ``entry``'s file if it is inside ``models_dir`` (``ModelInUse`` otherwise)."""
    root = models_dir.expanduser().resolve()
    given = Path(entry.config.model_path).expanduser()
    path = given.parent.resolve() / given.name  # a link itself is removed, not its target
    if not path.is_relative_to(root):
        raise ModelInUse(f"The model '{entry.id}' is outside the models folder; kept.")
    path.unlink(missing_ok=True)
    return path


class EngineRuntime:
    """Holds the model router (once built), the default model's load and any load failure.

    ``engine`` is the default model's engine; other library models load on demand through
    ``router``. A background task unloads models whose keep_alive or idle time ran out.
    """

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.router = single_model_router(settings, engine) if engine is not None else None
        self.failure: str | None = None
        self.draining = False
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def engine(self) -> Engine | None:
        """The default model's engine once it exists (loading, ready or dead)."""
        router = self.router
        if router is None:
            return None
        return router.current_engine(router.default_id)

    def start_loading(self, factory: RouterFactory = build_library_router) -> None:
        """Start building the router (if needed) and loading the default model."""
        self._task = asyncio.create_task(self._load(factory), name="engine-load")
        self._sweeper = asyncio.create_task(self._sweep(), name="model-sweeper")

    async def _load(self, factory: RouterFactory) -> None:
        try:
            if self.router is None:
                self.router = await factory(self.settings)
            await self.router.engine()
        except EngineError as exc:
            self.failure = exc.message
            logger.error("the model could not be loaded: %s", exc.message)
        except Exception as exc:
            self.failure = f"the engine failed to start ({type(exc).__name__})"
            logger.error("the engine failed to start", exc_info=exc)
        else:
            self._log_ready()
            await self._load_pinned()

    async def _load_pinned(self) -> None:
        """Load the pinned models after the default one (a preset's ``pinned``: meant to be
        ready, such as an embedding model next to the chat model); a failure is logged and
        shown as that model's state, and a request retries it."""
        router = self.router
        if router is None:
            return
        for status in router.status():
            if status.entry.pinned and status.state == "unloaded":
                try:
                    await router.load(status.entry.id)
                except EngineError as exc:
                    logger.error("pinned model %s did not load: %s", status.entry.id, exc.message)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            if self.router is not None and not self.draining:
                try:
                    await self.router.sweep()
                except Exception:
                    logger.exception("unloading idle models failed")

    async def engine_for(self, name: str | None, keep_alive_s: float | None = None) -> Engine:
        """The engine of the model ``name`` selects (the default one without a name),
        loaded first when needed; 503 while draining or before the library is read."""
        if self.draining:
            raise ServerDraining("The server is shutting down and takes no new requests.")
        router = self.router
        if router is None or name is None or not router.knows(name):
            if router is not None and router.strict_names and name is not None:
                router.resolve(name)  # raises ModelNotFound naming what is available
            engine = self.ready_engine()
            if keep_alive_s is not None and router is not None:
                await router.engine(None, keep_alive_s)
            return engine
        return await router.engine(name, keep_alive_s)

    async def rescan(self) -> None:
        """Read the models folder again (after a pull): new files join the library."""
        if self.router is not None:
            added, removed = await rescan(self.router, self.settings)
            logger.info("library rescanned: %d added, %d removed", len(added), len(removed))

    async def delete_model(self, name: str) -> Path:
        """Remove a library model's file (``/api/delete``): unloaded first if loaded and
        idle; the default model, pinned models and busy ones are refused (``ModelInUse``)."""
        router = self.router
        if router is None:
            raise ModelInUse("This server has no model library; nothing can be removed.")
        entry = await router.release(name)
        path = await asyncio.to_thread(_remove_inside, entry, self.settings.models_dir)
        router.forget(entry.id)
        logger.info("removed model %s (%s)", entry.id, path)
        return path

    def _log_ready(self) -> None:
        engine = self.engine
        if engine is None or not engine.health().ready:
            return
        info = engine.model_info()
        offload = info.offload
        logger.info(
            "Model ready: %s (%s), %d slots x %d tokens, %s: %d/%d layers on %s. %s",
            info.name,
            info.quantization,
            info.n_slots,
            info.n_ctx_slot,
            offload.backend,
            offload.layers_offloaded,
            offload.layers_total,
            offload.device_name or "?",
            offload.reason,
        )

    async def stop(self) -> None:
        """Cancel a load still running and stop every engine."""
        for task in (self._task, self._sweeper):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._stop_engine()

    async def drain(self, timeout_s: float, poll_s: float = 0.05) -> int:
        """Stop admitting, let running requests finish for up to ``timeout_s``, then end the
        rest; returns how many were ended.

        The rest end by stopping the engine, which cancels them: their streams close with the
        error event "server shutting down" (and ``[DONE]``), a non-streamed request gets a
        503. The model is freed then; the app's lifespan stop finds it stopped.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        logger.info("draining: new requests get 503; waiting up to %.1f s", timeout_s)
        # The engine has no "idle" event to wait on; its stats are a non-blocking snapshot.
        while self._active() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(poll_s)
        left = self._active()
        if left:
            logger.warning("shutdown timeout: ending %d running request(s)", left)
            await self._stop_engine()
        else:
            logger.info("drained: no request is running")
        return left

    def _active(self) -> int:
        if self.router is None:
            return 0
        return sum(
            status.engine.stats().requests_active
            for status in self.router.status()
            if status.engine is not None
        )

    async def _stop_engine(self) -> None:
        if self.router is None:
            return
        try:
            await self.router.stop()
        except Exception as exc:
            logger.error("the engines did not stop cleanly", exc_info=exc)
        else:
            logger.info("engines stopped, each model freed")

    def health(self) -> EngineHealth:
        """Loading, ready, restarting, failed, dead or stopped (never blocks)."""
        if self.failure is not None:
            return EngineHealth("dead", self.failure)
        engine = self.engine
        if engine is None:
            return EngineHealth("loading", f"resolving the model '{self.settings.model}'")
        return engine.health()

    def check_listing(self) -> None:
        """Model lists answer once the default model is up, and still when its worker
        crashed (restarting or failed: the list says so per model); 503 while loading or
        draining, as every other route."""
        crashed = self.health().state in ("restarting", "failed", "dead")
        if crashed and self.failure is None and self.router is not None and not self.draining:
            return
        self.ready_engine()

    def ready_engine(self) -> Engine:
        """The engine if it takes requests; else the error that says why not."""
        if self.draining:
            raise ServerDraining("The server is shutting down and takes no new requests.")
        state = self.health()
        engine = self.engine
        if state.ready and engine is not None:
            return engine
        if state.state == "loading":
            raise EngineNotReady("The model is still loading; retry in a few seconds.")
        if state.state == "restarting":
            raise EngineNotReady(f"The engine is restarting ({state.reason}); retry shortly.")
        if self.failure is not None:
            raise ModelLoadError(f"The model could not be loaded: {self.failure}")
        raise EngineDead(f"The engine is not running: {state.reason or state.state}.")
