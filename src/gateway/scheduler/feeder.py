"""The scheduler of one model: feeds the runner's running batch from the admission queue.

One feeder task per model takes groups of compatible rows from the queue and submits them to the runner, whose
decode loop admits each group between two decoding steps (continuous batching): rows join while others are
generating, and leave the step they finish. At most ``max_batch_size`` rows run at once; the feeder forms the
next group once the previous one is in the batch. When the model is idle, what is queued starts at once. While
rows are generating, a group is sized for the recent load (``_target``): when more rows are expected back than
are queued, the feeder waits up to ``max_batch_wait_s`` for half of them, so that returning rows join in a few
groups (a prefill each) instead of one by one.

Each submission is watched by a task of its own:

- out of memory: the runner has freed its allocator cache; the rows are submitted again in halves, down to
  single rows; a streamed row whose client has tokens already is failed rather than run twice (a row that is
  not streamed is run again from its prompt: its client has seen nothing); a single row waits for rows of other
  submissions to leave the batch and joins again, and fails (``OutOfMemory``, counted by the breaker) only when
  it runs out of memory with nothing else running;
- a submission running past ``watchdog_s`` means the decode loop is stuck: the runner is reset (a new loop
  thread or model process), every row it held fails with ``WorkerStalled``, and feeding goes on;
- any other model error fails the rows of that submission, and feeding goes on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from gateway.errors import GatewayError, ModelError, OutOfMemory, RequestCancelled, WorkerStalled
from gateway.runners.base import Decoder
from gateway.scheduler.queue import AdmissionQueue, WorkItem
from gateway.stats import BatchRecord, NullSink, StatsSink

log = logging.getLogger("gateway.scheduler")

# How long the peak load seen at admission keeps sizing groups (see ``ModelScheduler._target``).
_LOAD_WINDOW_S = 1.0


class ModelScheduler:
    """One model's admission queue and its feeder: the task that hands groups of queued rows to the decoder.

    Each finished submission goes to ``sink`` as a ``BatchRecord``, and a decode loop replaced by the watchdog as
    ``worker_replaced``.
    """

    def __init__(
        self,
        name: str,
        runner: Decoder,
        *,
        max_queue: int,
        max_batch_size: int,
        max_batch_wait_s: float,
        watchdog_s: float = 120.0,
        sink: StatsSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.runner = runner
        self.queue = AdmissionQueue(max_queue, clock)
        self.max_batch_size = max_batch_size
        self.max_batch_wait_s = max_batch_wait_s
        self.watchdog_s = watchdog_s
        self.sink = sink if sink is not None else NullSink()
        self._clock = clock
        self._feeder: asyncio.Task[None] | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self._running: set[WorkItem] = set()
        self._held: set[WorkItem] = set()  # rows out of the runner after an out-of-memory error, waiting their turn
        self._room = asyncio.Event()
        self._peak_load = 1
        self._peak_at = -math.inf
        self.queue.on_put = self._note_load

    @property
    def running_rows(self) -> int:
        """Rows handed to the runner and not yet settled."""
        return len(self._running)

    @property
    def workers_alive(self) -> int:
        """1 while the feeder runs and the decode loop (or its model process) is alive, else 0."""
        return int(self._feeder is not None and not self._feeder.done() and self.runner.alive)

    def start(self) -> None:
        self.runner.start()
        self._feeder = asyncio.create_task(self._feed(), name=f"{self.name}-feeder")

    async def close(self, reason: GatewayError) -> None:
        """Stop feeding; rows still queued are answered with ``reason``."""
        for item in self.queue.close():
            item.resolve(reason)
        tasks = [t for t in (self._feeder, *self._watchers) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def abandon(self, reason: GatewayError) -> int:
        """Answer every queued and running row with ``reason`` now, and tell the running ones to stop.

        For a drain that ran out of time: the clients get a proper error instead of a dropped connection.
        Returns how many rows were answered.
        """
        items = [*self.queue.close(), *self._running]
        for item in items:
            item.resolve(reason)
            item.cancel()
        return len(items)

    async def _feed(self) -> None:
        while True:
            if self._free() <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            batch = await self.queue.next_batch(self._free, self.max_batch_wait_s, self._target)
            if not batch:
                return
            try:
                admitted = self._submit(batch)
            except Exception:  # a bug here must not stop feeding; the rows still get an answer
                log.exception("submit failed", extra={"model": self.name})
                self._settle(batch, ModelError())
                continue
            await admitted  # the next group forms once this one is in the running batch

    def _free(self) -> int:
        """Room left in the running batch: rows the runner has finished no longer count.

        A row is finished (``row.done``, set by the runner) before its answer reaches the event loop, and each
        answer wakes the feeder (``WorkItem.on_resolved``). So when a whole batch finishes, the next group is
        handed to the model right after the first answer, not after the event loop has answered every row and
        the submission's watcher has run: with requests queued, the model no longer idles while answers go out.
        """
        return self.max_batch_size - sum(1 for item in self._running if not item.row.done)

    def _note_load(self) -> None:
        """Called as rows are queued: the rows waiting plus those running and not yet answered."""
        load = self.queue.depth + self._unanswered()
        now = self._clock()
        if load >= self._peak_load or now - self._peak_at > _LOAD_WINDOW_S:
            self._peak_load, self._peak_at = load, now

    def _unanswered(self) -> int:
        return sum(1 for item in self._running if not item.future.done())

    def _target(self) -> int:
        """How many rows the next group should wait for (up to ``max_batch_wait_s``).

        - Nothing running: 1. The model is idle, and waiting would only add to its idle time; what is queued
          starts at once, and the rows that come back meanwhile join while it decodes (TGI does the same).
        - Rows running: half of the rows expected back, that is the peak load seen at admission in the last
          second less the rows still generating. Rows answered together come back one by one, as the event
          loop answers them and reads their next requests; each group pays a prefill of its own, so joining
          one by one costs a forward pass per row, while waiting for all of them leaves the running rows to
          finish alone. Half is the middle way.
        - Light load (no peak in the last second): 1, so a lone request never waits.
        """
        if not self._running or self._clock() - self._peak_at > _LOAD_WINDOW_S:
            return 1
        return max(1, (self._peak_load - self._unanswered()) // 2)

    def _submit(self, batch: list[WorkItem]) -> asyncio.Future[bool]:
        now = self._clock()
        for item in batch:
            item.started_at = now
            item.on_resolved = self._room.set
        self._running.update(batch)
        submission = self.runner.submit([item.row for item in batch])
        watcher = asyncio.create_task(self._watch(batch, submission.done, now), name=f"{self.name}-submission")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return asyncio.wrap_future(submission.admitted)

    async def _watch(self, batch: list[WorkItem], done: Future[int], started: float) -> None:
        try:
            await self._await_done(batch, done, started)
        except asyncio.CancelledError:
            for item in batch:
                item.cancel()
            raise
        except Exception:  # a bug here must not leave a request waiting
            log.exception("worker error", extra={"model": self.name})
            self._settle(batch, ModelError())
        finally:
            self._running.difference_update(batch)
            self._room.set()

    async def _await_done(self, batch: Sequence[WorkItem], done: Future[int], started: float) -> None:
        if isinstance(await self._outcome(batch, done, started), OutOfMemory):
            await self._retry_halves(batch)

    async def _outcome(self, batch: Sequence[WorkItem], done: Future[int], started: float) -> OutOfMemory | None:
        """Wait for a submission and settle what went wrong, except out of memory, which is returned."""
        outcome = asyncio.wrap_future(done)
        try:
            await asyncio.wait_for(asyncio.shield(outcome), self.watchdog_s)
        except asyncio.CancelledError:
            outcome.add_done_callback(_retrieve)  # settled later (a reset or close): nobody reads it then
            raise
        except TimeoutError:
            outcome.add_done_callback(_retrieve)  # failed by the reset below, with nobody left to read it
            self._report(len(batch), started, ok=False)
            log.error("worker stalled; replacing it", extra={"model": self.name, "batch_size": len(batch)})
            for item in batch:
                item.cancel()
            self._settle(batch, WorkerStalled())
            # Every other submission of the stuck loop fails with WorkerStalled through its own watcher.
            self.runner.reset(WorkerStalled())
            self.sink.worker_replaced(self.name)
            return None
        except OutOfMemory as exc:
            self._report(len(batch), started, ok=False)
            return exc
        except GatewayError as exc:
            self._report(len(batch), started, ok=False)
            self._settle(batch, exc)
            return None
        self._report(len(batch), started, ok=True)
        return None

    async def _retry_halves(self, batch: Sequence[WorkItem]) -> None:
        pending = [i for i in batch if not i.row.done]
        for item in pending:
            if _streamed(item):
                item.resolve(OutOfMemory())  # its client has tokens already: running it again would repeat them
        pending = [i for i in pending if not _streamed(i) and not i.future.done()]
        if not pending:
            return
        if len(batch) == 1:
            await self._retry_alone(pending[0])
            return
        log.warning("out of memory; retrying in halves", extra={"model": self.name, "batch_size": len(batch)})
        half = max(len(pending) // 2, 1)
        self._held.update(pending)
        try:
            for part in (pending[:half], pending[half:]):
                for item in part:
                    if item.cancelled() and not item.future.done():
                        item.resolve(RequestCancelled())  # its client left while the first half ran
                part = [i for i in part if not i.future.done()]
                self._held.difference_update(part)
                if part:
                    started = self._clock()
                    submission = self.runner.submit([item.row for item in part])
                    await self._await_done(part, submission.done, started)
        finally:
            self._held.difference_update(pending)

    async def _retry_alone(self, item: WorkItem) -> None:
        """One row out of memory. While rows of other submissions decode, the memory is theirs: the row waits
        for one of them to leave the batch and joins again, as often as it takes. Only with nothing else running
        does it fail (``OutOfMemory``, which the breaker counts: repeated ones at minimum load open it)."""
        while True:
            others = [i for i in self._running if i is not item and i not in self._held and _decoding(i)]
            if not others:
                item.resolve(OutOfMemory("the model ran out of memory with this row alone"))
                return
            log.warning(
                "out of memory joining a busy batch; retrying once rows have left",
                extra={"model": self.name, "batch_size": len(others) + 1},
            )
            while not item.future.done() and all(_decoding(i) for i in others):
                self._room.clear()  # set by every answer; a row is done before its answer reaches the loop
                await self._room.wait()
            if item.future.done():
                return  # answered meanwhile: its deadline passed, or its client left
            if item.cancelled():
                item.resolve(RequestCancelled())
                return
            started = self._clock()
            submission = self.runner.submit([item.row])
            if not isinstance(await self._outcome([item], submission.done, started), OutOfMemory):
                return

    def _settle(self, batch: Sequence[WorkItem], error: GatewayError) -> None:
        for item in batch:
            item.resolve(error)

    def _report(self, size: int, started: float, ok: bool) -> None:
        self.sink.batch_finished(BatchRecord(model=self.name, size=size, inference_s=self._clock() - started, ok=ok))


def _decoding(item: WorkItem) -> bool:
    """Whether this row is in the runner's batch: neither finished by the runner nor answered (an answered row
    is dropped; a row whose submission failed was never in the batch or has left it)."""
    return not item.row.done and not item.future.done()


def _streamed(item: WorkItem) -> bool:
    """Whether tokens of this row have been sent to its client."""
    return item.row.stream and item.row.emitted_tokens > 0


def _retrieve(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()
