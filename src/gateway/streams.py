"""Several row streams of one request as one: the ``n`` choices of an OpenAI stream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, Sequence

from gateway.service import StreamEvent

_END = object()


async def merge_streams(streams: Sequence[AsyncGenerator[StreamEvent, None]]) -> AsyncGenerator[StreamEvent, None]:
    """The events of ``streams`` as they come, each with ``index`` set to its stream's position.

    The first step of every stream (admission) runs at once and together, so the rows are queued side by side
    and join the same batch. If any of them is refused, the others are closed and that error is raised before
    anything is yielded; an error later ends the merged stream with it.
    """
    firsts = await asyncio.gather(*(anext(s) for s in streams), return_exceptions=True)
    failed = next((f for f in firsts if isinstance(f, BaseException)), None)
    if failed is not None:
        for stream in streams:
            await stream.aclose()
        raise failed
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncGenerator[StreamEvent, None], first: StreamEvent) -> None:
        try:
            await queue.put((index, first))
            if not first.final:
                async for event in stream:
                    await queue.put((index, event))
            await queue.put((index, _END))
        except Exception as exc:
            await queue.put((index, exc))

    pumps = [
        asyncio.ensure_future(pump(i, s, f))
        for i, (s, f) in enumerate(zip(streams, firsts, strict=True))
        if isinstance(f, StreamEvent)
    ]
    try:
        running = len(pumps)
        while running:
            index, item = await queue.get()
            if item is _END:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            elif isinstance(item, StreamEvent):
                yield dataclasses.replace(item, index=index)
    finally:
        for task in pumps:
            task.cancel()
        for task in pumps:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for stream in streams:
            await stream.aclose()
