"""The bounded admission queue and the work item that travels through it.

A slot is reserved before the prompt is tokenized, so a full queue answers 429 without any work. An item
cancelled or answered while queued (its client gone, its deadline passed) leaves the queue at once and frees its
slot, so the queue holds only items still to run; one whose deadline passed unnoticed is dropped when a batch is
formed. Neither is ever computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from gateway.errors import DeadlineExceeded, GatewayError, QueueFull, RequestCancelled
from gateway.runners.base import Row
from gateway.types import GenerationOutput, GenerationParams, SamplingParams, Token

_DONE = object()


class _Answered:
    """The sink of a row whose item is answered: the runner drops the row, and what it still reports is moot."""

    def cancelled(self) -> bool:
        return True

    def on_token(self, token: Token) -> None:
        pass

    def on_done(self, outcome: GenerationOutput | GatewayError) -> None:
        pass


_ANSWERED = _Answered()


class WorkItem:
    """One row of work: a tokenized prompt, its params and deadline, and the channel back to its request.

    Implements the runner's ``RowSink``: the runner calls it from the worker thread, and every call is handed
    to the event loop with ``call_soon_threadsafe``.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        input_ids: list[int],
        params: GenerationParams,
        deadline: float,
        *,
        stream: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loop = loop
        self.future: asyncio.Future[GenerationOutput] = loop.create_future()
        self.events: asyncio.Queue[Token | object] | None = asyncio.Queue() if stream else None
        now = clock()
        self.deadline = deadline  # on ``clock``; the row's is the same instant on the runner's time.monotonic
        self.row = Row(
            input_ids=input_ids, params=params, deadline=time.monotonic() + (deadline - now), sink=self, stream=stream
        )
        self.enqueued_at = now
        self.started_at: float | None = None
        self.on_resolved: Callable[[], None] | None = None  # told once the outcome is set (the scheduler's wake-up)
        self.on_leave: Callable[[WorkItem], None] | None = None  # while queued: the queue gives its slot back
        self._cancelled = False

    @property
    def batch_key(self) -> SamplingParams:
        return self.row.params.sampling

    def cancel(self) -> None:
        """Drop this row: a queued item leaves the queue at once (answered ``RequestCancelled`` unless it was
        answered already), and the runner drops a running one at its next step."""
        self._cancelled = True
        self._leave_queue()

    def _leave_queue(self) -> None:
        on_leave, self.on_leave = self.on_leave, None
        if on_leave is not None:
            on_leave(self)

    # RowSink (worker thread)
    def cancelled(self) -> bool:
        return self._cancelled

    def on_token(self, token: Token) -> None:
        if self.events is not None:
            self._call(self.events.put_nowait, token)

    def on_done(self, outcome: GenerationOutput | GatewayError) -> None:
        self._call(self.resolve, outcome)

    def _call(self, fn: Callable[..., object], arg: object) -> None:
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(fn, arg)

    # event loop
    def resolve(self, outcome: GenerationOutput | BaseException) -> None:
        if self.future.done():
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
            # Retrieved by whoever awaits; mark it so an abandoned item logs no "never retrieved" warning.
            self.future.exception()
        else:
            self.future.set_result(outcome)
        if self.events is not None:
            self.events.put_nowait(_DONE)
        # The row stops pointing back here: no item <-> row reference cycle, so the answered item and its
        # output are freed as soon as the request lets go of them, not by the cyclic GC (whose full collections
        # stall the event loop for as long as they take).
        self.row.sink = _ANSWERED
        self._cancelled = True  # nothing left to compute: a runner holding this item as its sink drops the row
        self._leave_queue()
        if self.on_resolved is not None:
            self.on_resolved()

    @staticmethod
    def is_done_marker(event: object) -> bool:
        return event is _DONE


class AdmissionQueue:
    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self._items: deque[WorkItem] = deque()
        self._reserved = 0
        self._clock = clock
        self._changed = asyncio.Event()
        self._closed = False
        self.on_put: Callable[[], None] | None = None  # told after rows are queued (the scheduler's load estimate)

    @property
    def depth(self) -> int:
        """Rows waiting: queued plus reserved for requests still being tokenized."""
        return len(self._items) + self._reserved

    @property
    def full(self) -> bool:
        """No room for even one more row."""
        return self.depth >= self.capacity

    @staticmethod
    def refusal() -> QueueFull:
        """What a request that finds no room gets."""
        return QueueFull(retry_after=1.0)

    def reserve(self, rows: int) -> None:
        if self._closed or self.depth + rows > self.capacity:
            raise self.refusal()
        self._reserved += rows

    def release(self, rows: int) -> None:
        self._reserved = max(self._reserved - rows, 0)

    def put(self, items: list[WorkItem]) -> None:
        """Queue items whose slots were reserved."""
        self.release(len(items))
        for item in items:
            item.on_leave = self._forget
        self._items.extend(items)
        self._changed.set()
        if self.on_put is not None:
            self.on_put()

    def close(self) -> list[WorkItem]:
        """Refuse new work and hand back what was still queued."""
        self._closed = True
        left = list(self._items)
        self._items.clear()
        for item in left:
            item.on_leave = None
        self._changed.set()
        return left

    def _forget(self, item: WorkItem) -> None:
        # A queued item cancelled or answered (client gone, deadline): its slot is free again now, not when the
        # next batch is formed (a busy or stalled worker may not form one for a while).
        try:
            self._items.remove(item)
        except ValueError:
            return  # already out (dropped as expired)
        item.resolve(RequestCancelled())  # unless it was answered already
        self._changed.set()

    def _drop_dead(self) -> None:
        """Answer the items whose deadline passed while queued (cancelled and answered ones left already)."""
        now = self._clock()
        expired = [item for item in self._items if now > item.deadline]
        if expired:
            self._items = deque(item for item in self._items if now <= item.deadline)
            for item in expired:
                item.resolve(DeadlineExceeded())

    def _compatible(self, key: SamplingParams) -> int:
        return sum(1 for item in self._items if item.batch_key == key)

    async def _wait_change(self, wait_s: float | None) -> bool:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), wait_s)
        except TimeoutError:
            return False
        return True

    async def next_batch(
        self, max_size: int | Callable[[], int], max_wait_s: float, target: int | Callable[[], int] = 1
    ) -> list[WorkItem]:
        """Wait for work, then take up to ``max_size`` items with the first item's settings.

        With fewer than ``target`` compatible items queued, wait up to ``max_wait_s`` for more to arrive;
        ``target`` (a number, or a function asked once work is there) comes from the recent load, so a lone
        request under light load never waits. ``max_size`` may be a function too (the room left in a running
        batch), asked when the items are taken.
        """
        while True:
            self._drop_dead()
            if self._items:
                break
            if self._closed:
                return []
            await self._wait_change(None)
        room = max_size if callable(max_size) else (lambda: max_size)
        goal = min(target() if callable(target) else target, room())
        if goal > 1 and max_wait_s > 0:
            until = self._clock() + max_wait_s
            key = self._items[0].batch_key
            while self._compatible(key) < goal and not self._closed:
                remaining = until - self._clock()
                if remaining <= 0 or not await self._wait_change(remaining):
                    break
            self._drop_dead()
            if not self._items:
                return await self.next_batch(max_size, max_wait_s, target)
        key = self._items[0].batch_key
        batch: list[WorkItem] = []
        rest: deque[WorkItem] = deque()
        size = max(room(), 1)
        for item in self._items:
            if len(batch) < size and item.batch_key == key:
                item.on_leave = None  # taken: the runner drops it if it is cancelled now
                batch.append(item)
            else:
                rest.append(item)
        self._items = rest
        if self._items:
            self._changed.set()  # let another idle worker look at what is left
        return batch
