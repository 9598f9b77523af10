"""The engine worker process: one model's ``LlamaEngine`` served over a pipe.

``run`` is the process entry (a spawn target). The process owns the llama context, the
scheduler, the KV manager and the prompt cache, exactly as the in-process engine does (it IS
a ``LlamaEngine``); only delivery differs: the engine thread sends each step's events as ONE
``STEP`` message, straight from the engine thread, instead of waking an event loop. The
worker's own small asyncio loop reads submits, aborts, embedding calls and stop.

A native crash (segfault, abort, out of memory) ends this process only; the API process
(``app.engine.remote.WorkerEngine``) sees the pipe close and restarts it. SIGINT and
SIGTERM are ignored here: a terminal's Ctrl-C or a service manager's SIGTERM to the whole
process group must not kill the engine under a drain; the API process tells it when to stop,
and a pipe that closes (the API process died) stops it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from time import perf_counter
from typing import Any

from app.engine import ipc
from app.engine.scheduler import Delivery
from app.engine.service import BackendFactory, LlamaEngine
from app.engine.types import EngineConfig, EngineStats, GenerationRequest
from app.errors import EngineError, ModelLoadError

logger = logging.getLogger(__name__)

STATS_INTERVAL_S = 0.1  # a STEP message carries the engine's stats at most this often
IDLE_STATS_S = 0.25  # while no step runs, changed stats are sent this often


def run(
    conn: Connection,
    config: EngineConfig,
    setup_logging: Callable[[], None] | None = None,
    backend_factory: BackendFactory | None = None,
) -> None:
    """Process entry: load ``config``'s model, serve requests until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if setup_logging is not None:
        setup_logging()
    asyncio.run(EngineWorker(conn, config, backend_factory).serve())


class EngineWorker:
    """A ``LlamaEngine`` whose requests come from, and whose events go to, one connection."""

    def __init__(
        self, conn: Connection, config: EngineConfig, backend_factory: BackendFactory | None
    ) -> None:
        self._conn = conn
        self._send_lock = threading.Lock()  # the engine thread and this loop both send
        self._engine = LlamaEngine(config, backend_factory, deliver=self._send_step)
        self._stats_at = 0.0
        self._sent_stats: EngineStats | None = None
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[tuple[Any, ...]], None]] = {
            ipc.SUBMIT: self._on_submit,
            ipc.ABORT: self._on_abort,
            ipc.EMBED: self._on_embed,
            ipc.LORA: self._on_lora,
            ipc.STOP: self._on_stop,
        }

    async def serve(self) -> None:
        """Load the model, report READY (or FAILED), serve until STOP or the pipe closes."""
        try:
            await self._engine.start()
        except Exception as exc:
            error = exc if isinstance(exc, EngineError) else ModelLoadError(str(exc))
            self._send((ipc.FAILED, ipc.pack_error(error)))
            return
        self._send((ipc.READY, self._engine.model_info(), self._engine.stats()))
        loop = asyncio.get_running_loop()
        loop.add_reader(self._conn.fileno(), self._on_readable)
        ticker = asyncio.create_task(self._report_idle_stats())
        try:
            await self._done.wait()
        finally:
            loop.remove_reader(self._conn.fileno())
            ticker.cancel()
            # Cancels what still runs: their final events go out before the thread exits.
            await self._engine.stop()
            self._conn.close()
        logger.debug("engine worker exits")

    # ------------------------------------------------------------------ commands
    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                message = self._conn.recv()
                self._handlers[message[0]](message)
        except (EOFError, OSError):  # the API process is gone: nobody to serve
            logger.info("the API process closed the pipe; the engine worker stops")
            self._done.set()

    def _on_submit(self, message: tuple[Any, ...]) -> None:
        request: GenerationRequest = message[1]
        try:
            self._engine.enqueue(request, request.request_id)
        except EngineError as exc:
            self._send((ipc.REJECTED, request.request_id, ipc.pack_error(exc)))

    def _on_abort(self, message: tuple[Any, ...]) -> None:
        self._engine.abort(message[1])

    def _on_embed(self, message: tuple[Any, ...]) -> None:
        task = asyncio.create_task(self._embed(message[1], message[2]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_lora(self, message: tuple[Any, ...]) -> None:
        task = asyncio.create_task(self._reply(message[1], self._engine.lora_adapters(message[2])))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_stop(self, _: tuple[Any, ...]) -> None:
        self._done.set()

    async def _embed(self, call_id: int, texts: list[str]) -> None:
        await self._reply(call_id, self._engine.embed(texts))

    async def _reply(self, call_id: int, work: Awaitable[object]) -> None:
        try:
            result = await work
        except Exception as exc:
            self._send((ipc.REPLY, call_id, False, ipc.pack_error(exc)))
        else:
            self._send((ipc.REPLY, call_id, True, result))

    # ------------------------------------------------------------------ events and stats
    def _send_step(self, delivery: Delivery) -> None:
        """Engine thread: every event of this step in one message (stats now and then)."""
        items = [ipc.pack_step(sink, events) for sink, events in delivery]  # type: ignore[arg-type]
        stats = None
        now = perf_counter()
        if now - self._stats_at >= STATS_INTERVAL_S:
            self._stats_at = now
            stats = self._sent_stats = self._engine.stats()
        self._send((ipc.STEP, items, stats))

    async def _report_idle_stats(self) -> None:
        while True:
            await asyncio.sleep(IDLE_STATS_S)
            stats = self._engine.stats()
            if stats != self._sent_stats:
                self._sent_stats = stats
                self._send((ipc.STATS, stats))

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock, contextlib.suppress(OSError):  # API gone: the reader sees EOF
            self._conn.send(message)
