"""``LlamaEngine``: the Engine protocol over one model backend and one engine thread.

Threading: the event loop thread tokenizes, validates and queues requests; ONE engine
thread owns the llama context and runs the scheduler loop. Events travel back once per step
with ``loop.call_soon_threadsafe`` into each request's ``asyncio.Queue``. There is no lock
around the model; the scheduler's small queue lock is never held during a decode.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass, replace
from time import perf_counter
from typing import cast

from app.engine.backend import ModelBackend
from app.engine.embeddings import EmbeddingService
from app.engine.lora import AdapterScales
from app.engine.prompt import prompt_tokens
from app.engine.prompt_cache import HostPromptCache
from app.engine.scheduler import Delivery, Scheduler
from app.engine.sequence import Sequence
from app.engine.speculative import SpecConfig
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
from app.errors import (
    ContextLengthExceeded,
    EngineDead,
    EngineError,
    EngineNotReady,
    InvalidRequest,
    ModelLoadError,
)
from app.limits import (
    EMBEDDING_TOKENS_PER_CTX_TOKEN,
    MAX_EMBEDDING_INPUTS,
    check_count,
    check_prompt_bytes,
    clamp_last_n,
)

logger = logging.getLogger(__name__)

BackendFactory = Callable[[EngineConfig], ModelBackend]
_EventQueue = asyncio.Queue[list[TokenEvent]]
EMBEDDING_INPUTS_PER_BATCH = 16  # sequences of the embeddings context


@dataclass(frozen=True, slots=True)
class _Sink:
    """Where a request's events go: its queue, on the loop that submitted it."""

    loop: asyncio.AbstractEventLoop
    queue: _EventQueue


def _load_llama_backend(config: EngineConfig) -> ModelBackend:
    # Imported here so that importing the engine never loads llama_cpp.
    from app.engine.llama import load_backend

    return load_backend(config)


class LlamaEngine:
    """Serves many concurrent generations from one model with continuous batching."""

    def __init__(
        self,
        config: EngineConfig,
        backend_factory: BackendFactory | None = None,
        *,
        deliver: Callable[[Delivery], None] | None = None,
    ) -> None:
        self._config = config
        self._factory = backend_factory or _load_llama_backend
        # Where each step's events go: by default into the submitting loop's queues (see
        # ``submit``); an engine worker process passes its own (one IPC message per step).
        self._deliver = deliver or _deliver_to_loops
        self._health = EngineHealth("loading", "not started")
        self._backend: ModelBackend | None = None
        self._info: ModelInfo | None = None
        self._scheduler: Scheduler | None = None
        self._thread: threading.Thread | None = None
        self._embeddings: EmbeddingService | None = None
        self._lora = AdapterScales(config.lora)

    async def start(self) -> None:
        """Load the model in a worker thread, then start the engine thread."""
        if self._backend is not None or self._health.state != "loading":
            raise RuntimeError("LlamaEngine.start() may be called once")
        self._health = EngineHealth("loading", f"loading {self._config.model_path}")
        try:
            backend = await asyncio.to_thread(self._factory, self._config)
            info = backend.info()
        except EngineError as exc:
            self._health = EngineHealth("dead", exc.message)
            raise
        except Exception as exc:
            self._health = EngineHealth("dead", f"model load failed: {exc}")
            raise ModelLoadError(f"Could not load {self._config.model_path}: {exc}") from exc
        if self._health.state == "stopped":  # stop() was called while the model loaded
            await asyncio.to_thread(backend.close)
            raise EngineDead("The engine was stopped while the model was loading.")
        self._backend, self._info = backend, info
        if self._config.embeddings:
            try:
                await self._start_embeddings(backend)
            except EngineError as exc:
                self._health = EngineHealth("dead", exc.message)
                raise
        self._scheduler = Scheduler(
            backend,
            deliver=self._deliver,
            max_queue=self._config.max_queue,
            prompt_cache=self._config.prompt_cache,
            host_cache=_host_cache(self._config),
            prefill_budget=self._config.prefill_budget,
            default_seed=self._config.seed,
            speculative=SpecConfig(
                self._config.speculative, self._config.draft_max, self._config.draft_min_accept
            ),
        )
        self._thread = threading.Thread(target=self._run, name="cria-engine", daemon=True)
        self._thread.start()
        self._health = EngineHealth("ready")
        logger.info(
            "engine ready: %s, %d slots x %d tokens, batch %d",
            info.name,
            backend.n_slots,
            backend.n_ctx_slot,
            backend.n_batch,
        )

    async def stop(self) -> None:
        """Cancel every request, join the engine thread and free the model."""
        if self._health.state != "dead":
            self._health = EngineHealth("stopped", "the engine was stopped")
        if self._scheduler is not None:
            self._scheduler.close("stopped")
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._embeddings is not None:
            embeddings, self._embeddings = self._embeddings, None
            await asyncio.to_thread(embeddings.close)
        if self._backend is not None:
            backend, self._backend = self._backend, None
            await asyncio.to_thread(backend.close)

    def submit(self, request: GenerationRequest) -> EventStream:
        """Validate and queue ``request``; return its event stream (see Engine.submit)."""
        sink = _Sink(asyncio.get_running_loop(), asyncio.Queue())
        self.enqueue(request, sink)
        return EventStream(request.request_id, _stream(sink.queue), self.abort)

    def enqueue(self, request: GenerationRequest, sink: object) -> None:
        """Validate and queue ``request``; its events go to ``deliver`` with ``sink``.

        Raises what ``submit`` raises. ``submit`` passes its loop queue; an engine worker
        process passes the request id (its events go back over IPC).
        """
        scheduler, backend = self._running()
        prompt = self._prompt_tokens(request, backend)
        limit = backend.n_ctx_slot
        if len(prompt) >= limit:
            raise ContextLengthExceeded(len(prompt), limit)
        validate_sampling(request.sampling, n_vocab=cast(ModelInfo, self._info).n_vocab)
        request = _clamped(request, limit)
        if request.sampling.grammar is not None:
            backend.check_grammar(request.sampling.grammar)
        adapters = self._lora.resolve(request.lora)
        scheduler.enqueue(Sequence(request, prompt, sink, perf_counter(), adapters))

    def check_grammar(self, grammar: Grammar) -> None:
        """Convert and compile ``grammar`` (cached); see Engine. Thread-safe."""
        _, backend = self._running()
        backend.check_grammar(grammar)

    def prepare(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` with its prompt tokenized (``prompt_tokens``). Thread-safe: routes call
        it in a worker thread so that tokenizing a long prompt never blocks the event loop."""
        if request.prompt_tokens is not None:
            return request
        _, backend = self._running()
        tokens = self._prompt_tokens(request, backend)
        return replace(request, prompt_tokens=tuple(tokens))

    def abort(self, request_id: str) -> None:
        """End a request at the next step; unknown ids are ignored. Thread-safe."""
        if self._scheduler is not None:
            self._scheduler.abort(request_id)

    def count_tokens(self, text: str, *, add_special: bool = True) -> int:
        """Number of tokens ``text`` tokenizes to."""
        _, backend = self._running()
        return len(backend.tokenize(text, add_special=add_special))

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """Token ids of ``text`` (special tokens parsed)."""
        _, backend = self._running()
        return backend.tokenize(text, add_special=add_special) if text else []

    def detokenize(self, tokens: Seq[int]) -> str:
        """The text of ``tokens``; ids outside the vocabulary are an InvalidRequest."""
        _, backend = self._running()
        self._check_ids(tokens, "tokens")
        return backend.detokenize(tokens) if tokens else ""

    def token_pieces(self, tokens: Seq[int]) -> list[bytes]:
        """Each token's raw bytes, control tokens rendered."""
        _, backend = self._running()
        self._check_ids(tokens, "tokens")
        return [backend.special_piece(token) for token in tokens]

    async def embed(self, texts: Seq[str]) -> Embeddings:
        """Pooled, normalised vectors of ``texts`` from the embeddings thread (see Engine)."""
        _, backend = self._running()
        service = self._embeddings
        if service is None:
            raise InvalidRequest(
                "Embeddings are off on this server: start it with --embeddings "
                "(CRIA_EMBEDDINGS=true).",
                param="input",
            )
        budget = EMBEDDING_TOKENS_PER_CTX_TOKEN.value * service.max_input_tokens
        check_count(MAX_EMBEDDING_INPUTS, "input", len(texts))
        # A token is at least one byte, so more bytes than the token budget cannot fit:
        # refused before tokenizing, which then runs off the event loop.
        check_prompt_bytes("input", _utf8_len(texts), budget)
        inputs = await asyncio.to_thread(_tokenize_all, backend, texts)
        for i, tokens in enumerate(inputs):
            if not tokens:
                raise InvalidRequest(f"input[{i}] is empty.", param="input")
            if len(tokens) > service.max_input_tokens:
                raise ContextLengthExceeded(len(tokens), service.max_input_tokens, param="input")
        check_count(EMBEDDING_TOKENS_PER_CTX_TOKEN, "input", sum(map(len, inputs)), budget)
        vectors = await asyncio.wrap_future(service.submit(inputs))
        return Embeddings(tuple(tuple(v) for v in vectors), sum(len(t) for t in inputs))

    async def lora_adapters(
        self, scales: Mapping[int, float] | None = None
    ) -> tuple[LoraAdapter, ...]:
        """The loaded LoRA adapters with their current scales, after setting ``scales``."""
        if scales is not None:
            self._lora.set_scales(scales)
        return self._lora.adapters()

    def health(self) -> EngineHealth:
        """Loading, ready, dead or stopped, with a reason."""
        return self._health

    def stats(self) -> EngineStats:
        """A snapshot of slots, queue, KV usage and totals; never waits for the engine."""
        if self._scheduler is not None:
            return self._scheduler.stats()
        cfg = self._config
        return EngineStats(
            0, cfg.n_slots, 0, cfg.max_queue, 0, cfg.n_slots * cfg.n_ctx_slot, 0, 0, 0, 0, 0
        )

    @property
    def steps(self) -> int:
        """Scheduler steps run so far (one decode call each), for benchmarks and logs."""
        return self._scheduler.steps if self._scheduler is not None else 0

    def model_info(self) -> ModelInfo:
        """Facts about the loaded model."""
        if self._info is None:
            if self._health.state == "loading":
                raise EngineNotReady("The model is still loading.")
            raise EngineDead(f"No model is loaded ({self._health.reason}).")
        return self._info

    # ------------------------------------------------------------------ internals
    async def _start_embeddings(self, backend: ModelBackend) -> None:
        # A second context on the same weights, with a thread of its own (see embeddings.py).
        cfg = self._config
        embedder = await asyncio.to_thread(
            backend.new_embedder,
            pooling=cfg.embeddings_pooling,
            # One decode holds a whole batch of inputs; its compute buffers grow with n_ctx,
            # so the longest input is capped at the decode batch (as embedding models are).
            n_ctx=min(cfg.n_ctx_slot, cfg.n_batch),
            n_seq_max=EMBEDDING_INPUTS_PER_BATCH,
            n_threads=cfg.n_threads or os.cpu_count() or 1,
        )
        self._embeddings = EmbeddingService(embedder, max_queue=cfg.max_queue)

    def _check_ids(self, tokens: Seq[int], param: str) -> None:
        check_token_ids(tokens, cast(ModelInfo, self._info).n_vocab, param)

    def _running(self) -> tuple[Scheduler, ModelBackend]:
        state = self._health.state
        if state == "loading":
            raise EngineNotReady("The model is still loading.")
        if state != "ready" or self._scheduler is None or self._backend is None:
            raise EngineDead(f"The engine is not running ({self._health.reason}).")
        return self._scheduler, self._backend

    def _prompt_tokens(self, request: GenerationRequest, backend: ModelBackend) -> list[int]:
        n_vocab = cast(ModelInfo, self._info).n_vocab
        return prompt_tokens(request, backend, n_vocab=n_vocab, n_ctx=backend.n_ctx_slot)

    def _run(self) -> None:
        """The engine thread: step while there is work, sleep when idle."""
        scheduler = cast(Scheduler, self._scheduler)
        try:
            while scheduler.wait_for_work():
                scheduler.step()
        except BaseException as exc:
            logger.exception("the engine thread crashed")
            reason = f"engine thread crashed: {type(exc).__name__}: {exc}"
            self._health = EngineHealth("dead", reason)
            try:
                scheduler.fail_all(reason)
            except Exception:
                logger.exception("failing the live requests failed")
        logger.debug("engine thread exits")


def _deliver_to_loops(delivery: Delivery) -> None:
    """Engine thread: hand a step's events over, one loop wake-up per event loop."""
    first = cast(_Sink, delivery[0][0]).loop
    if all(cast(_Sink, sink).loop is first for sink, _ in delivery):
        _call_soon(first, delivery)
        return
    by_loop: dict[asyncio.AbstractEventLoop, Delivery] = {}
    for item in delivery:
        by_loop.setdefault(cast(_Sink, item[0]).loop, []).append(item)
    for loop, items in by_loop.items():
        _call_soon(loop, items)


def _utf8_len(texts: Seq[str]) -> int:
    return sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)


def _tokenize_all(backend: ModelBackend, texts: Seq[str]) -> list[list[int]]:
    return [backend.tokenize(text, add_special=True) if text else [] for text in texts]


def _clamped(request: GenerationRequest, n_ctx: int) -> GenerationRequest:
    """``request`` with ``penalty_last_n`` clamped to the slot context: llama.cpp keeps a
    ring buffer of that many tokens per sequence (4 bytes each), so 500 million would cost
    2 GB for a window no sequence can fill."""
    sampling = request.sampling
    last_n = clamp_last_n(sampling.penalty_last_n, n_ctx)
    if last_n == sampling.penalty_last_n:
        return request
    return replace(request, sampling=replace(sampling, penalty_last_n=last_n))


def _host_cache(config: EngineConfig) -> HostPromptCache | None:
    if not config.prompt_cache or config.cache_ram_mb <= 0:
        return None
    return HostPromptCache(config.cache_ram_mb * 1024 * 1024)


def _call_soon(loop: asyncio.AbstractEventLoop, delivery: Delivery) -> None:
    try:
        loop.call_soon_threadsafe(_put_all, delivery)
    except RuntimeError:  # the loop is closed: nobody is listening any more
        logger.warning("event loop closed; dropped events of %d requests", len(delivery))


def _put_all(delivery: Delivery) -> None:
    for sink, events in delivery:
        cast(_Sink, sink).queue.put_nowait(events)


async def _stream(queue: _EventQueue) -> AsyncIterator[TokenEvent]:
    while True:
        for event in await queue.get():
            yield event
            if event.finish_reason is not None:
                return
