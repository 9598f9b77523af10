"""The engine's life in the app: resolve and load in the background, report, drain, stop.

Loading never blocks startup: while it runs, /health answers 503 "loading" and the
other routes answer 503, so an orchestrator sees a live process that is not ready yet.
Draining (on SIGTERM/SIGINT, see ``app.serve``) is the mirror image: new requests get 503
and /health says "draining" while the running requests finish, up to a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from app.api.errors import ServerDraining
from app.engine.protocol import Engine
from app.engine.types import EngineHealth
from app.errors import EngineDead, EngineError, EngineNotReady, ModelLoadError
from app.settings import Settings

logger = logging.getLogger(__name__)

EngineFactory = Callable[[Settings], Awaitable[Engine]]


async def build_llama_engine(settings: Settings) -> Engine:
    """Resolve the configured model (may download) and build the llama engine for it."""
    from app.engine.service import LlamaEngine
    from app.models.registry import resolve_model

    path = await asyncio.to_thread(resolve_model, settings.model, settings.models_dir)
    return LlamaEngine(settings.engine_config(path))


class EngineRuntime:
    """Holds the engine (once built), the background load task and any load failure."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.failure: str | None = None
        self.draining = False
        self._task: asyncio.Task[None] | None = None

    def start_loading(self, factory: EngineFactory = build_llama_engine) -> None:
        """Start building (if needed) and starting the engine in the background."""
        self._task = asyncio.create_task(self._load(factory), name="engine-load")

    async def _load(self, factory: EngineFactory) -> None:
        try:
            if self.engine is None:
                self.engine = await factory(self.settings)
            await self.engine.start()
        except EngineError as exc:
            self.failure = exc.message
            logger.error("the model could not be loaded: %s", exc.message)
        except Exception as exc:
            self.failure = f"the engine failed to start ({type(exc).__name__})"
            logger.error("the engine failed to start", exc_info=exc)
        else:
            self._log_ready()

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
        """Cancel a load still running and stop the engine."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
        return self.engine.stats().requests_active if self.engine is not None else 0

    async def _stop_engine(self) -> None:
        if self.engine is None or self.engine.health().state == "stopped":
            return
        try:
            await self.engine.stop()
        except Exception as exc:
            logger.error("the engine did not stop cleanly", exc_info=exc)
        else:
            logger.info("engine stopped, model freed")

    def health(self) -> EngineHealth:
        """Loading, ready, dead or stopped (never blocks, never touches the engine thread)."""
        if self.failure is not None:
            return EngineHealth("dead", self.failure)
        if self.engine is None:
            return EngineHealth("loading", f"resolving the model '{self.settings.model}'")
        return self.engine.health()

    def ready_engine(self) -> Engine:
        """The engine if it takes requests; else the error that says why not."""
        if self.draining:
            raise ServerDraining("The server is shutting down and takes no new requests.")
        state = self.health()
        if state.ready and self.engine is not None:
            return self.engine
        if state.state == "loading":
            raise EngineNotReady("The model is still loading; retry in a few seconds.")
        if self.failure is not None:
            raise ModelLoadError(f"The model could not be loaded: {self.failure}")
        raise EngineDead(f"The engine is not running: {state.reason or state.state}.")
