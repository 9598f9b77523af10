"""Cancel a non-streamed generation when its client goes away.

A non-streamed request holds a slot until the whole reply is ready; if the client hangs
up meanwhile, the work is cancelled and the per-call object (``app.api.deps.Call``) closes
the engine's stream handle, which aborts the request in the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request

T = TypeVar("T")

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away first"


class ClientGone(Exception):
    """The client disconnected before the response was ready."""


async def _wait_for_disconnect(request: Request) -> None:
    # The body was read already, so the next message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; raise ``ClientGone`` (after cancelling it) if the client leaves first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientGone
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
