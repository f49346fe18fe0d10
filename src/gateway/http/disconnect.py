"""Cancellation on disconnect: a request's work stops when its client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from gateway.errors import RequestCancelled

T = TypeVar("T")


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; if the client disconnects first, cancel it (its rows are dropped) and answer 499.

    ``work`` runs in this task, so its synchronous start (admission: a full queue's 429) happens at once, in the
    same turn of the event loop as the request's parsing; a watcher task cancels this one on a disconnect.
    """
    current = asyncio.current_task()
    assert current is not None
    disconnected = False

    async def watch() -> None:
        nonlocal disconnected
        while (await request.receive())["type"] != "http.disconnect":
            pass
        disconnected = True
        current.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not disconnected:
            raise
        current.uncancel()  # the cancellation was ours: this request goes on to answer 499
        raise RequestCancelled() from None
    finally:
        watcher.cancel()
