"""Ollama's ``/api/pull`` progress: the blocking fetch (``app.models.pull``) runs in a worker
thread; its progress lines come back to the event loop through a queue, thinned to one line
per percent so a large download does not flood the client.

The last line, ``success``, is held until ``done`` (the library rescan) has run, so a client
that sees it can use the model by name at once. A client that leaves early does not stop the
download or the rescan.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from app.errors import InvalidRequest
from app.models.pull import PullStatus, pull, source_of
from app.schemas.ollama import OllamaPullRequest, OllamaPullStatus

_END = object()
logger = logging.getLogger(__name__)


def pull_reference(body: OllamaPullRequest) -> str:
    """The reference a pull names (``model``, else ``name``), checked before any line is
    sent (a reference this server cannot fetch is a 400, not a failed stream)."""
    ref = (body.model or body.name or "").strip()
    if not ref:
        raise InvalidRequest("Name the model to pull in 'model'.", param="model")
    source_of(ref)
    return ref


def _wire(status: PullStatus) -> OllamaPullStatus:
    return OllamaPullStatus(
        status=status.status,
        digest=status.digest,
        total=status.total,
        completed=status.completed,
    )


async def pull_lines(
    ref: str, models_dir: Path, done: Callable[[Path], Awaitable[None]]
) -> AsyncIterator[OllamaPullStatus]:
    """Fetch ``ref`` into ``models_dir``; its progress lines, ``success`` last. An error
    (offline, a bad source, not a GGUF) is raised from the iterator (the stream's error line)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    last_percent: dict[str, int] = {}

    def report(status: PullStatus) -> None:
        if status.total and status.completed is not None and status.completed < status.total:
            percent = status.completed * 100 // status.total
            if last_percent.get(status.status) == percent:
                return
            last_percent[status.status] = percent
        loop.call_soon_threadsafe(queue.put_nowait, status)

    def work() -> Path:
        try:
            return pull(ref, models_dir, report)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    async def fetch_and_rescan() -> None:
        await done(await asyncio.to_thread(work))

    # A task of its own: a client that leaves does not stop the download or the rescan.
    task = asyncio.ensure_future(fetch_and_rescan())
    try:
        while (item := await queue.get()) is not _END:
            assert isinstance(item, PullStatus)
            if item.status != "success":
                yield _wire(item)
        await asyncio.shield(task)
        yield OllamaPullStatus(status="success")
    finally:
        if not task.done():
            task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("a pull whose client left failed: %s", task.exception())


async def pull_answer(
    ref: str, models_dir: Path, done: Callable[[Path], Awaitable[None]]
) -> OllamaPullStatus:
    """``stream: false``: run the whole pull; its last line."""
    lines = [line async for line in pull_lines(ref, models_dir, done)]
    return lines[-1]
