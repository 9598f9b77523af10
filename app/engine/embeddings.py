"""``EmbeddingService``: one thread that owns the embeddings context and batches requests.

Threading: llama.cpp contexts are not thread-safe, so the pooled embeddings context (a
second context on the loaded model, see ``app.engine.llama.embeddings``) gets ONE owner
thread, like the generation context has the engine thread. Requests reach it through a
bounded queue (full: ``Overloaded``) and get their vectors back through a
``concurrent.futures.Future`` the event loop awaits, so the loop never blocks on a decode.
The worker takes every request waiting when it wakes and packs their inputs into as few
decodes as fit the context (``n_ctx`` tokens, ``n_seq_max`` inputs each).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from app.engine.backend import Embedder
from app.errors import EngineDead, EngineError, Overloaded

logger = logging.getLogger(__name__)

Vectors = list[list[float]]


@dataclass(eq=False)
class _Job:
    inputs: Sequence[Sequence[int]]
    future: Future[Vectors] = field(default_factory=Future)
    vectors: dict[int, list[float]] = field(default_factory=dict)


_Item = tuple[_Job, int]  # a job and the index of one of its inputs


def normalize(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to unit Euclidean length (as OpenAI's embeddings are)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)


def pack(items: Sequence[_Item], *, n_ctx: int, n_seq_max: int) -> list[list[_Item]]:
    """Split ``items`` into batches of at most ``n_seq_max`` inputs and ``n_ctx`` tokens."""
    batches: list[list[_Item]] = []
    current: list[_Item] = []
    tokens = 0
    for item in items:
        size = len(item[0].inputs[item[1]])
        if current and (len(current) >= n_seq_max or tokens + size > n_ctx):
            batches.append(current)
            current, tokens = [], 0
        current.append(item)
        tokens += size
    if current:
        batches.append(current)
    return batches


class EmbeddingService:
    """Computes embeddings on one worker thread that owns ``embedder``."""

    def __init__(self, embedder: Embedder, *, max_queue: int) -> None:
        self._embedder = embedder
        self._max_queue = max_queue
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="cria-embeddings", daemon=True)
        self._thread.start()

    @property
    def max_input_tokens(self) -> int:
        """The longest input one request may have."""
        return self._embedder.n_ctx

    def submit(self, inputs: Sequence[Sequence[int]]) -> Future[Vectors]:
        """Queue ``inputs`` (each non-empty and at most ``max_input_tokens`` long)."""
        if self._closed:
            raise EngineDead("The embeddings worker has stopped.")
        job = _Job(inputs)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise Overloaded(self._jobs.qsize(), self._max_queue) from None
        return job.future

    def close(self) -> None:
        """Stop the worker (waiting requests fail with EngineDead) and free the context."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)  # blocks only while the queue is full, i.e. briefly
            self._thread.join()
        self._embedder.close()

    # ------------------------------------------------------------------ worker thread
    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            jobs, stop = self._drain(first)
            live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            self._serve(live)
            if stop:
                break
        while True:  # a submit that raced close()
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(EngineDead("The embeddings worker has stopped."))

    def _drain(self, first: _Job | None) -> tuple[list[_Job], bool]:
        jobs: list[_Job] = []
        item = first
        while item is not None:
            jobs.append(item)
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return jobs, False
        return jobs, True

    def _serve(self, jobs: list[_Job]) -> None:
        items = [(job, i) for job in jobs for i in range(len(job.inputs))]
        failed: set[_Job] = set()
        embedder = self._embedder
        for batch in pack(items, n_ctx=embedder.n_ctx, n_seq_max=embedder.n_seq_max):
            batch = [item for item in batch if item[0] not in failed]
            if not batch:
                continue
            try:
                vectors = embedder.embed([job.inputs[i] for job, i in batch])
            except Exception as exc:
                logger.exception("an embeddings batch failed")
                for job, _ in batch:
                    if job not in failed:
                        failed.add(job)
                        job.future.set_exception(EngineError(f"Computing embeddings failed: {exc}"))
                continue
            for (job, i), vector in zip(batch, vectors, strict=True):
                job.vectors[i] = normalize(vector)
        for job in jobs:
            if job not in failed:
                job.future.set_result([job.vectors[i] for i in range(len(job.inputs))])
