"""``WorkerEngine``: the Engine protocol in the API process, over an engine worker process.

The worker (``app.engine.worker``) owns the model, its context and the scheduler. Here:
a vocabulary-only load of the same GGUF answers the synchronous vocabulary calls
(``count_tokens``, ``tokenize``, ...) and checks each request before it is sent (prompt
length, token ids, sampling values, grammar), so ``submit`` raises at once as the
in-process engine does. The event loop reads the pipe (``add_reader``: no extra thread) and
dispatches each STEP message's events to the requests' queues; health, stats and model
facts are what the worker last reported, so they never block.

When the worker dies (segfault, abort, SIGKILL, out of memory) the requests it held end with
``EngineCrashed`` and the worker is restarted with backoff; after too many crashes
(``CrashPolicy``) the engine stays ``failed`` with the reason. Nothing else in the API
process is touched, so every other route keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from time import monotonic
from typing import Any, Protocol

from app.engine import ipc
from app.engine.lora import AdapterScales
from app.engine.prompt import prompt_tokens
from app.engine.restart import CrashPolicy
from app.engine.service import BackendFactory
from app.engine.stream import EventStream
from app.engine.types import (
    Embeddings,
    EngineConfig,
    EngineHealth,
    EngineStats,
    GenerationRequest,
    Grammar,
    LoraAdapter,
    ModelInfo,
    TokenEvent,
)
from app.engine.validate import check_token_ids, validate_sampling
from app.engine.worker import run as worker_main
from app.errors import (
    ContextLengthExceeded,
    EngineCrashed,
    EngineDead,
    EngineError,
    EngineNotReady,
    InvalidRequest,
    ModelLoadError,
    Overloaded,
    RequestCancelled,
)


class Vocabulary(Protocol):
    """What the API process needs of the model's tokenizer (``app.engine.llama.vocab``)."""

    n_vocab: int

    def tokenize(
        self, text: str, *, add_special: bool, parse_special: bool = True
    ) -> list[int]: ...
    def special_piece(self, token: int) -> bytes: ...
    def detokenize(self, tokens: Seq[int]) -> str: ...
    def check_grammar(self, grammar: Grammar) -> None: ...
    def close(self) -> None: ...


logger = logging.getLogger(__name__)

STOP_WAIT_S = 30.0  # a stopping worker cancels its requests and frees the model in this time
EXIT_WAIT_S = 5.0  # after its pipe closed, a dead worker's exit status is there by then
_Item = list[ipc.PackedEvent] | EngineError
_Queue = asyncio.Queue[_Item]


class _WorkerExited(Exception):
    """The worker's pipe closed before it said READY or FAILED."""


class WorkerEngine:
    """One model served by an engine worker process (see the module docstring)."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        setup_logging: Callable[[], None] | None = None,
        backend_factory: BackendFactory | None = None,
        vocabulary: Callable[[str], Vocabulary] | None = None,
        policy: CrashPolicy | None = None,
    ) -> None:
        self._config = config
        self._worker_args = (config, setup_logging, backend_factory)
        self._load_vocabulary = vocabulary or _load_vocabulary
        self._policy = policy or CrashPolicy()
        self._health = EngineHealth("loading", "not started")
        self._vocab: Vocabulary | None = None
        self._info: ModelInfo | None = None
        self._stats = _idle_stats(config)
        self._streams: dict[str, _Queue] = {}
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._call_ids = itertools.count()
        self._conn: Connection | None = None
        self._proc: BaseProcess | None = None
        self._ready: asyncio.Future[ModelInfo] | None = None
        self._live = False  # the current worker said READY and its pipe is open
        self._stopping = False
        self._restarts = 0
        self._recovery: asyncio.Task[None] | None = None
        self._send_lock = threading.Lock()
        self._handlers: dict[str, Callable[[tuple[Any, ...]], None]] = {
            ipc.STEP: self._on_step,
            ipc.STATS: self._on_stats,
            ipc.READY: self._on_ready,
            ipc.FAILED: self._on_failed,
            ipc.REJECTED: self._on_rejected,
            ipc.REPLY: self._on_reply,
        }

    # ------------------------------------------------------------------ life
    async def start(self) -> None:
        """Load the vocabulary here and the model in a new worker; returns when ready."""
        if self._health.state != "loading" or self._proc is not None:
            raise RuntimeError("WorkerEngine.start() may be called once")
        path = self._config.model_path
        self._health = EngineHealth("loading", f"loading {path} in an engine process")
        # The vocabulary loads here while the worker starts (each takes about a quarter of
        # a second with the default model: a model switch waited for both in turn).
        vocab = asyncio.ensure_future(asyncio.to_thread(self._load_vocabulary, path))
        try:
            try:
                self._info = await self._spawn()
            finally:
                self._vocab = await vocab
        except EngineError as exc:
            self._health = EngineHealth("dead", exc.message)
            if self._proc is not None and self._proc.is_alive():
                self._proc.kill()  # the worker loaded, but the vocabulary here did not
            raise
        self._health = EngineHealth("ready")
        logger.info("engine process %s ready: %s", self._pid(), self._info.name)

    async def stop(self) -> None:
        """Cancel every request, stop the worker (it frees the model) and wait for it."""
        self._stopping = True
        if self._health.state not in ("dead", "failed"):
            self._health = EngineHealth("stopped", "the engine was stopped", self._restarts)
        if self._recovery is not None:
            self._recovery.cancel()
        proc = self._proc
        if self._conn is not None:
            self._send((ipc.STOP,))
        if proc is not None and proc.pid is not None:
            await asyncio.to_thread(proc.join, STOP_WAIT_S)
            if proc.is_alive():
                logger.warning("the engine process did not stop in time; killing it")
                proc.kill()
                await asyncio.to_thread(proc.join, EXIT_WAIT_S)
        self._close_conn()
        self._fail_all(RequestCancelled("server shutting down: the request was ended early."))
        if self._vocab is not None:
            vocab, self._vocab = self._vocab, None
            vocab.close()

    async def _spawn(self) -> ModelInfo:
        """Start a worker and wait for READY; raises ``ModelLoadError`` if it fails."""
        context = _worker_context()
        parent, child = context.Pipe()
        proc = context.Process(
            target=worker_main, args=(child, *self._worker_args), name="cria-engine", daemon=True
        )
        await asyncio.to_thread(proc.start)
        child.close()
        loop = asyncio.get_running_loop()
        self._conn, self._proc = parent, proc
        self._ready = loop.create_future()
        loop.add_reader(parent.fileno(), self._on_readable)
        # uvloop's add_reader makes the socket non-blocking; a message larger than the socket
        # buffer (256 embeddings, ~1.3 MB) then failed mid-read with BlockingIOError, taken
        # for the worker's death. Readiness is all the loop needs: reads and sends block.
        os.set_blocking(parent.fileno(), True)
        try:
            info = await self._ready
        except _WorkerExited:
            reason = await _exit_reason(proc)
            raise ModelLoadError(
                f"The engine process died while loading the model ({reason}).", param="model"
            ) from None
        except EngineError:
            await asyncio.to_thread(proc.join, EXIT_WAIT_S)
            raise
        self._live = True
        return info

    # ------------------------------------------------------------------ requests
    def submit(self, request: GenerationRequest) -> EventStream:
        """Check ``request`` here, send it to the worker; its events come back per step."""
        info, vocab = self._running()
        prompt = self._prompt_tokens(request, vocab, info)
        if len(prompt) >= info.n_ctx_slot:
            raise ContextLengthExceeded(len(prompt), info.n_ctx_slot)
        validate_sampling(request.sampling, n_vocab=info.n_vocab)
        if request.sampling.grammar is not None:
            vocab.check_grammar(request.sampling.grammar)
        if request.lora:  # ids and scale values only: the worker owns the current scales
            AdapterScales(info.adapters).resolve(request.lora)
        request_id = request.request_id
        if request_id in self._streams:
            raise InvalidRequest(f"Request id {request_id!r} is already in use.")
        waiting = len(self._streams) - info.n_slots
        if waiting >= self._config.max_queue:
            raise Overloaded(max(waiting, 0), self._config.max_queue)
        sent = replace(request, prompt=tuple(prompt), prompt_tokens=None)
        if not self._send((ipc.SUBMIT, sent)):
            raise EngineNotReady("The engine process is restarting; retry in a few seconds.")
        queue: _Queue = asyncio.Queue()
        self._streams[request_id] = queue
        return EventStream(request_id, _events(request_id, queue), self.abort)

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` with its prompt tokenized here, in the caller's worker thread (see
        Engine.prepare); ``submit`` then sends those ids without tokenizing again."""
        if request.prompt_tokens is not None:
            return request
        info, vocab = self._running()
        return replace(request, prompt_tokens=tuple(self._prompt_tokens(request, vocab, info)))

    def abort(self, request_id: str) -> None:
        """End a request at the worker's next step; unknown ids are ignored. Thread-safe."""
        if request_id in self._streams:
            self._send((ipc.ABORT, request_id))

    async def embed(self, texts: Seq[str]) -> Embeddings:
        """Embeddings computed by the worker's embeddings context (see Engine.embed)."""
        result: Embeddings = await self._call(ipc.EMBED, list(texts))
        return result

    async def lora_adapters(
        self, scales: Mapping[int, float] | None = None
    ) -> tuple[LoraAdapter, ...]:
        """The worker's LoRA adapters and current scales, after setting ``scales`` there.

        The scales live in the worker: a restarted worker starts from the load-time scales.
        """
        result: tuple[LoraAdapter, ...] = await self._call(
            ipc.LORA, dict(scales) if scales is not None else None
        )
        return result

    async def _call(self, kind: str, argument: object) -> Any:
        """Send ``(kind, call_id, argument)`` to the worker and wait for its REPLY."""
        self._running()
        call_id = next(self._call_ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        try:
            if not self._send((kind, call_id, argument)):
                raise EngineNotReady("The engine process is restarting; retry in a few seconds.")
            return await future
        finally:
            self._calls.pop(call_id, None)

    # ------------------------------------------------------------------ vocabulary (local)
    def check_grammar(self, grammar: Grammar) -> None:
        """Convert and compile ``grammar`` against the local vocabulary (cached: ``submit``
        then finds it compiled); raises ``InvalidRequest``. Thread-safe."""
        self._vocabulary().check_grammar(grammar)

    def count_tokens(self, text: str, *, add_special: bool = True) -> int:
        """Number of tokens ``text`` tokenizes to."""
        return len(self._vocabulary().tokenize(text, add_special=add_special))

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """Token ids of ``text`` (special tokens parsed)."""
        return self._vocabulary().tokenize(text, add_special=add_special) if text else []

    def detokenize(self, tokens: Seq[int]) -> str:
        """The text of ``tokens``; ids outside the vocabulary are an InvalidRequest."""
        vocab = self._vocabulary()
        check_token_ids(tokens, vocab.n_vocab, "tokens")
        return vocab.detokenize(tokens) if tokens else ""

    def token_pieces(self, tokens: Seq[int]) -> list[bytes]:
        """Each token's raw bytes, control tokens rendered."""
        vocab = self._vocabulary()
        check_token_ids(tokens, vocab.n_vocab, "tokens")
        return [vocab.special_piece(token) for token in tokens]

    # ------------------------------------------------------------------ reports (never block)
    def health(self) -> EngineHealth:
        """Loading, ready, restarting, failed, dead or stopped, with a reason."""
        return self._health

    def stats(self) -> EngineStats:
        """The worker's last snapshot; ``requests_active`` counts the streams open here."""
        return replace(self._stats, requests_active=len(self._streams))

    def model_info(self) -> ModelInfo:
        """Facts about the model, as the worker reported them when it was ready."""
        if self._info is None:
            if self._health.state == "loading":
                raise EngineNotReady("The model is still loading.")
            raise EngineDead(f"No model is loaded ({self._health.reason}).")
        return self._info

    # ------------------------------------------------------------------ the pipe
    def _send(self, message: tuple[Any, ...]) -> bool:
        """Send to the worker (any thread); False when there is no live pipe."""
        with self._send_lock:
            conn = self._conn
            if conn is None:
                return False
            try:
                conn.send(message)
            except OSError:  # the worker just died: the reader sees EOF and recovers
                return False
        return True

    def _on_readable(self) -> None:
        """Event loop: read every message waiting (one wake-up may carry several steps)."""
        conn = self._conn
        if conn is None:
            return
        try:
            while conn.poll():
                message = conn.recv()
                self._handlers[message[0]](message)
        except (EOFError, OSError):
            self._on_exit()

    def _on_step(self, message: tuple[Any, ...]) -> None:
        _, items, stats = message
        streams = self._streams
        for request_id, events, final in items:
            queue = streams.pop(request_id, None) if final else streams.get(request_id)
            if queue is not None:  # None: closed here already (its abort is on its way)
                queue.put_nowait(events)
        if stats is not None:
            self._stats = stats

    def _on_stats(self, message: tuple[Any, ...]) -> None:
        self._stats = message[1]

    def _on_ready(self, message: tuple[Any, ...]) -> None:
        _, info, stats = message
        self._stats = stats
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(info)

    def _on_failed(self, message: tuple[Any, ...]) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ipc.unpack_error(message[1]))

    def _on_rejected(self, message: tuple[Any, ...]) -> None:
        _, request_id, packed = message
        queue = self._streams.pop(request_id, None)
        if queue is not None:
            queue.put_nowait(ipc.unpack_error(packed))

    def _on_reply(self, message: tuple[Any, ...]) -> None:
        _, call_id, ok, value = message
        future = self._calls.pop(call_id, None)
        if future is None or future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(ipc.unpack_error(value))

    # ------------------------------------------------------------------ death and restarts
    def _on_exit(self) -> None:
        """The worker's pipe closed: it exited (stop), or it died."""
        self._close_conn()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(_WorkerExited())
        if not self._live:
            return
        self._live = False
        if self._stopping:
            self._fail_all(RequestCancelled("server shutting down: the request was ended early."))
            return
        self._health = EngineHealth(
            "restarting", "the engine process stopped unexpectedly", self._restarts
        )
        self._stats = replace(_idle_stats(self._config), requests_total=self._stats.requests_total)
        assert self._proc is not None
        self._recovery = asyncio.create_task(self._recover(self._proc), name="engine-restart")

    async def _recover(self, proc: BaseProcess) -> None:
        """End the dead worker's requests, then restart it with backoff (or give up)."""
        reason = await _exit_reason(proc)
        logger.error("the engine process %s %s", proc.pid, reason)
        self._fail_all(
            EngineCrashed(
                f"The engine process stopped unexpectedly ({reason}) and is restarting; "
                "retry the request."
            )
        )
        while not self._stopping:
            delay = self._policy.crashed(monotonic())
            if delay is None:
                self._give_up(reason)
                return
            self._health = EngineHealth(
                "restarting",
                f"the engine process {reason}; restarting it in {delay:.1f} s",
                self._restarts,
            )
            await asyncio.sleep(delay)
            self._restarts += 1
            try:
                self._info = await self._spawn()
            except EngineError as exc:
                reason = f"failed to restart: {exc.message}"
                logger.error("the engine process %s", reason)
                continue
            self._health = EngineHealth("ready", None, self._restarts)
            logger.info("engine process %s ready again (restart %d)", self._pid(), self._restarts)
            return

    def _give_up(self, reason: str) -> None:
        policy = self._policy
        message = (
            f"the engine process crashed {policy.recent} times within {policy.window_s:.0f} s "
            f"and is not restarted again (last: {reason})"
        )
        logger.error("%s", message)
        self._health = EngineHealth("failed", message, self._restarts)

    def _fail_all(self, error: EngineError) -> None:
        streams, self._streams = self._streams, {}
        for queue in streams.values():
            queue.put_nowait(error)
        calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(error)

    def _close_conn(self) -> None:
        with self._send_lock:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(OSError, ValueError):  # closed already
            asyncio.get_running_loop().remove_reader(conn.fileno())
        conn.close()

    # ------------------------------------------------------------------ helpers
    def _running(self) -> tuple[ModelInfo, Vocabulary]:
        state = self._health.state
        if state == "loading":
            raise EngineNotReady("The model is still loading.")
        if state == "restarting":
            raise EngineNotReady("The engine process is restarting; retry in a few seconds.")
        if state != "ready" or self._info is None or self._vocab is None:
            raise EngineDead(f"The engine is not running ({self._health.reason}).")
        return self._info, self._vocab

    def _vocabulary(self) -> Vocabulary:
        if self._vocab is None:
            if self._health.state == "loading":
                raise EngineNotReady("The model is still loading.")
            raise EngineDead(f"The engine is not running ({self._health.reason}).")
        return self._vocab

    @staticmethod
    def _prompt_tokens(request: GenerationRequest, vocab: Vocabulary, info: ModelInfo) -> list[int]:
        return prompt_tokens(request, vocab, n_vocab=info.n_vocab, n_ctx=info.n_ctx_slot)

    def _pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def _load_vocabulary(path: str) -> Vocabulary:
    # Imported here so that importing the engine never loads llama_cpp.
    from app.engine.llama import load_vocabulary

    return load_vocabulary(path)


def _idle_stats(config: EngineConfig) -> EngineStats:
    cells = config.n_slots * config.n_ctx_slot
    return EngineStats(
        0,
        config.n_slots,
        0,
        config.max_queue,
        0,
        cells,
        0,
        0,
        0,
        0,
        0,
        draft_method=config.speculative,
    )


async def _exit_reason(proc: BaseProcess) -> str:
    """How ``proc`` ended, in words ("was killed by SIGKILL", "exited with code 1")."""
    await asyncio.to_thread(proc.join, EXIT_WAIT_S)
    code = proc.exitcode
    if code is None:
        proc.kill()  # its pipe is closed but it lingers: it serves nobody any more
        await asyncio.to_thread(proc.join, EXIT_WAIT_S)
        return "closed its pipe and did not exit"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


async def _events(request_id: str, queue: _Queue) -> AsyncIterator[TokenEvent]:
    """One request's events, unpacked from the step messages; raises what ends it early."""
    while True:
        item = await queue.get()
        if isinstance(item, EngineError):
            raise item
        for packed in item:
            event = ipc.unpack_event(request_id, packed)
            yield event
            if event.finish_reason is not None:
                return


WORKER_PRELOAD = ("app.engine.worker", "app.engine.llama.loader")


def _worker_context() -> SpawnContext | ForkServerContext:
    """Workers start from a fork server that has already imported the engine and llama.cpp.

    A spawned worker started a new interpreter and imported all of that for every model
    load (and, under the ``cria`` script, the whole CLI again as the main module): about a
    quarter of a second of every model switch. The fork server pays it once; it imports
    only, so it holds no llama context, no GPU state and no engine threads when it forks.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_PRELOAD))
    return context
