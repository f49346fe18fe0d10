"""The batching workers of one model.

Each worker is an asyncio task with a thread of its own: it takes a batch from the shared queue, runs the
runner's blocking ``generate`` on its thread (never on the event loop), and leaves the fan-out of results to the
work items. A batch is sized for the recent load (``ModelScheduler._target``): with more rows in the system than
are queued, the worker waits up to ``max_batch_wait_s`` for them. Around each batch:

- out of memory: free the allocator cache and run the batch again in halves, down to single rows; a row that
  already streamed tokens is failed rather than run twice; OOM at batch size 1 fails with ``fatal=True`` so
  the service trips the breaker;
- a batch that runs past ``watchdog_s`` is abandoned with its thread: its rows fail with ``WorkerStalled`` and
  the worker goes on with a new thread (the stuck one is told to stop and is left to end on its own);
- any other model error fails the rows of that batch, and the worker goes on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from gateway.errors import GatewayError, ModelError, OutOfMemory, WorkerStalled
from gateway.runners.base import ModelRunner
from gateway.scheduler.queue import AdmissionQueue, WorkItem

log = logging.getLogger("gateway.scheduler")

# How long the peak load seen at admission keeps sizing batches (see ``ModelScheduler._target``).
_LOAD_WINDOW_S = 1.0


class BatchObserver(Protocol):
    def batch_finished(self, size: int, inference_s: float, ok: bool) -> None: ...

    def worker_replaced(self) -> None: ...


class _Worker:
    def __init__(self, scheduler: ModelScheduler, index: int) -> None:
        self.scheduler = scheduler
        self.index = index
        self.executor = self._new_executor()
        self.task: asyncio.Task[None] | None = None
        self.busy = False

    def _new_executor(self) -> ThreadPoolExecutor:
        name = f"gateway-{self.scheduler.name.replace('/', '_')}-w{self.index}"
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def replace_thread(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = self._new_executor()

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()


class ModelScheduler:
    def __init__(
        self,
        name: str,
        runner: ModelRunner,
        *,
        max_queue: int,
        max_batch_size: int,
        max_batch_wait_s: float,
        workers: int = 1,
        watchdog_s: float = 120.0,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.runner = runner
        self.queue = AdmissionQueue(max_queue, clock)
        self.max_batch_size = max_batch_size
        self.max_batch_wait_s = max_batch_wait_s
        self.watchdog_s = watchdog_s
        self.observer = observer
        self._clock = clock
        self._workers = [_Worker(self, i) for i in range(workers)]
        self._running: set[WorkItem] = set()
        self._peak_load = 1
        self._peak_at = -math.inf
        self.queue.on_put = self._note_load

    @property
    def running_rows(self) -> int:
        """Rows in batches that are running now."""
        return len(self._running)

    @property
    def workers_alive(self) -> int:
        return sum(1 for w in self._workers if w.alive)

    def start(self) -> None:
        for worker in self._workers:
            worker.task = asyncio.create_task(self._loop(worker), name=f"{self.name}-worker-{worker.index}")

    async def close(self, reason: GatewayError) -> None:
        """Stop the workers; rows still queued are answered with ``reason``."""
        for item in self.queue.close():
            item.resolve(reason)
        for worker in self._workers:
            if worker.task is not None:
                worker.task.cancel()
        await asyncio.gather(*(w.task for w in self._workers if w.task is not None), return_exceptions=True)
        for worker in self._workers:
            worker.executor.shutdown(wait=False, cancel_futures=True)

    def abandon(self, reason: GatewayError) -> int:
        """Answer every queued and running row with ``reason`` now, and tell the running ones to stop.

        For a drain that ran out of time: the clients get a proper error instead of a dropped connection.
        Returns how many rows were answered.
        """
        items = [*self.queue.close(), *self._running]
        for item in items:
            item.cancel()
            item.resolve(reason)
        return len(items)

    async def _loop(self, worker: _Worker) -> None:
        while True:
            batch = await self.queue.next_batch(self.max_batch_size, self.max_batch_wait_s, self._target)
            if not batch:
                return
            worker.busy = True
            self._running.update(batch)
            try:
                await self._run(worker, batch)
            except asyncio.CancelledError:
                for item in batch:
                    item.cancel()
                raise
            except Exception:  # a bug here must not kill the worker; the rows still get an answer
                log.exception("worker error", extra={"model": self.name})
                self._fail(batch, ModelError())
            finally:
                worker.busy = False
                self._running.difference_update(batch)

    def _note_load(self) -> None:
        """Called as rows are queued: the rows waiting plus those running and not yet answered."""
        load = self.queue.depth + sum(1 for item in self._running if not item.future.done())
        now = self._clock()
        if load >= self._peak_load or now - self._peak_at > _LOAD_WINDOW_S:
            self._peak_load, self._peak_at = load, now

    def _target(self) -> int:
        """How many rows a worker should wait for (up to ``max_batch_wait_s``) before it starts a batch.

        The peak load seen at admission in the last second, shared among the workers. Under a steady load of
        closed-loop clients this keeps one full batch, instead of two part batches that take turns for good (the
        clients a batch answered come back while the next batch waits for them); when the load is light it is 1,
        so a lone request on an idle worker starts at once.
        """
        if self._clock() - self._peak_at > _LOAD_WINDOW_S:
            return 1
        return max(1, math.ceil(self._peak_load / len(self._workers)))

    async def _run(self, worker: _Worker, batch: Sequence[WorkItem]) -> None:
        now = self._clock()
        for item in batch:
            item.started_at = now
        rows = [item.row for item in batch]
        loop = asyncio.get_running_loop()
        started = self._clock()
        future = loop.run_in_executor(worker.executor, self.runner.generate, rows)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.watchdog_s)
        except TimeoutError:
            self._report(len(batch), started, ok=False)
            log.error("worker stalled; replacing it", extra={"model": self.name, "batch_size": len(batch)})
            for item in batch:
                item.cancel()
            worker.replace_thread()
            if self.observer is not None:
                self.observer.worker_replaced()
            self._fail(batch, WorkerStalled())
            return
        except OutOfMemory:
            self._report(len(batch), started, ok=False)
            await self._retry_halves(worker, batch)
            return
        except GatewayError as exc:
            self._report(len(batch), started, ok=False)
            self._fail(batch, exc)
            return
        self._report(len(batch), started, ok=True)

    async def _retry_halves(self, worker: _Worker, batch: Sequence[WorkItem]) -> None:
        pending = [i for i in batch if not i.row.done]
        if len(batch) == 1:
            # Nothing smaller to try, streamed or not: the breaker trips at once.
            for item in pending:
                item.resolve(OutOfMemory("the model ran out of memory at batch size 1", fatal=True))
            pending = []
        for item in pending:
            if item.row.emitted_tokens:
                item.resolve(OutOfMemory())  # already streamed: running it again would repeat tokens
        pending = [i for i in pending if not i.row.emitted_tokens and not i.future.done()]
        await asyncio.get_running_loop().run_in_executor(worker.executor, self.runner.free_memory)
        if not pending:
            return
        log.warning("out of memory; retrying in halves", extra={"model": self.name, "batch_size": len(batch)})
        half = max(len(pending) // 2, 1)
        for part in (pending[:half], pending[half:]):
            if part:
                await self._run(worker, part)

    def _fail(self, batch: Sequence[WorkItem], error: GatewayError) -> None:
        for item in batch:
            item.resolve(error)

    def _report(self, size: int, started: float, ok: bool) -> None:
        if self.observer is not None:
            self.observer.batch_finished(size, self._clock() - started, ok)
