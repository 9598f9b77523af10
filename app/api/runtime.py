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
from dataclasses import replace
from pathlib import Path

from app.api.errors import ServerDraining
from app.engine.protocol import Engine
from app.engine.router import ModelEntry, ModelRouter
from app.engine.types import EngineConfig, EngineHealth
from app.errors import EngineDead, EngineError, EngineNotReady, ModelLoadError
from app.logging_setup import configure_logging
from app.models.builtin import BUILTIN_MODELS
from app.models.library import LibraryModel, kv_bytes, scan_library
from app.settings import Settings, parse_lora

logger = logging.getLogger(__name__)

RouterFactory = Callable[[Settings], Awaitable[ModelRouter]]


def default_model_id(settings: Settings, path: Path | None = None) -> str:
    """The default model's id: ``--model-alias``, else the file's (or the reference's) stem."""
    if settings.model_alias:
        return settings.model_alias
    return (path or Path(settings.model)).name.removesuffix(".gguf")


def single_model_router(settings: Settings, engine: Engine) -> ModelRouter:
    """A router over one given engine (tests, embedders of the app): no library."""
    entry = ModelEntry(
        default_model_id(settings),
        EngineConfig(model_path=settings.model),
        names=model_names(settings),
        pinned=True,
    )
    return ModelRouter([entry], lambda _: engine, default_id=entry.id, max_loaded=1)


def model_names(settings: Settings) -> frozenset[str]:
    """Names that mean the --model model besides its id: the reference as typed
    (``smollm2``, a path, ``hf://...``), its alias, built-in names of the same file, and its
    LoRA adapters' names (a request naming one runs on this model, with the adapter)."""
    names = {settings.model, Path(settings.model).name, Path(settings.model).stem}
    names |= {name for name, spec in BUILTIN_MODELS.items() if spec.filename in names}
    if settings.model_alias:
        names.add(settings.model_alias)
    names |= {parse_lora(spec)[0] for spec in settings.lora}  # its LoRA adapters run on it
    return frozenset(name.strip() for name in names if name.strip())


async def build_library_router(settings: Settings) -> ModelRouter:
    """Resolve the --model model (may download) and scan the models folder; one router over
    them, each model served by a llama engine built when it is first needed."""
    from app.models.registry import resolve_model

    path = await asyncio.to_thread(resolve_model, settings.model, settings.models_dir)
    library = await asyncio.to_thread(scan_library, settings.models_dir)
    entries = library_entries(settings, path, library)
    return ModelRouter(
        entries,
        engine_factory(settings),
        default_id=entries[0].id,
        max_loaded=settings.max_loaded_models,
        memory_budget_bytes=memory_budget(settings),
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


def library_entries(
    settings: Settings, default_path: Path, library: list[LibraryModel]
) -> list[ModelEntry]:
    """The router's entries: the --model model first, then the rest of the library."""
    cells = settings.parallel * settings.ctx_size

    def estimate(model: LibraryModel | None, path: Path) -> int:
        size = path.stat().st_size
        return size + (kv_bytes(model.info, cells, settings.kv_cache_type) if model else 0)

    same = next((m for m in library if m.path.resolve() == default_path.resolve()), None)
    default = ModelEntry(
        default_model_id(settings, default_path),
        settings.engine_config(default_path),
        names=model_names(settings) | (same.names | {same.id} if same else frozenset()),
        pinned=True,
        memory_bytes=estimate(same, default_path),
    )
    entries = [default]
    for model in library:
        if model is same:
            continue
        # --lora adapters belong to the --model model only.
        config = replace(settings.engine_config(model.path), model_alias=model.id, lora=())
        entries.append(
            ModelEntry(model.id, config, model.names, False, estimate(model, model.path))
        )
    return entries


def memory_budget(settings: Settings) -> int | None:
    """Bytes the loaded models may take: ``--models-memory`` MiB, else the RAM available now
    (``MemAvailable``) less a margin; None when it cannot be read."""
    if settings.models_memory:
        return settings.models_memory * 2**20
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return max(0, int(line.split()[1]) * 1024 - MEMORY_MARGIN_BYTES)
    except OSError:
        return None
    return None


MEMORY_MARGIN_BYTES = 1 << 30  # left for the server itself, the OS and compute buffers
SWEEP_INTERVAL_S = 1.0


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
