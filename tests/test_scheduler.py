"""The admission queue on its own: slots, batch forming, and what is dropped before compute.

Work items are the real ``WorkItem`` the service queues, time is a ``ManualClock`` wherever a deadline or the
load window matters, and the batching loop runs the real demo model. Waits are bounded; the only timed wait is a
batch-fill window, kept short.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.demo import DEMO_CAUSAL_ID
from gateway.errors import DeadlineExceeded, QueueFull, RequestCancelled
from gateway.runners.faults import FaultPlan
from gateway.runners.transformers_runner import TransformersRunner
from gateway.scheduler import AdmissionQueue, ModelScheduler, WorkItem
from gateway.types import GenerationParams, SamplingParams
from tests.conftest import ManualClock
from tests.serving_helpers import wait_until

GREEDY = GenerationParams(max_new_tokens=4)
SAMPLED = GenerationParams(max_new_tokens=4, sampling=SamplingParams(do_sample=True, temperature=0.7, seed=1))


def item(clock: ManualClock, params: GenerationParams = GREEDY, deadline_in: float = 60.0) -> WorkItem:
    return WorkItem(asyncio.get_running_loop(), [1, 2, 3], params, clock() + deadline_in, clock=clock)


def queue_of(capacity: int = 8) -> tuple[AdmissionQueue, ManualClock]:
    clock = ManualClock()
    return AdmissionQueue(capacity, clock), clock


def admit(queue: AdmissionQueue, *items: WorkItem) -> list[WorkItem]:
    queue.reserve(len(items))
    queue.put(list(items))
    return list(items)


async def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    queue, clock = queue_of(capacity=3)
    queue.reserve(2)  # a request still being tokenized holds its slots
    admit(queue, item(clock))
    assert queue.depth == 3
    with pytest.raises(QueueFull) as refused:
        queue.reserve(1)
    assert refused.value.status_code == 429
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    queue.release(2)  # the tokenizing request failed (413, say): its slots come back
    queue.reserve(2)
    assert queue.depth == 3


async def test_a_lone_request_is_never_held_back() -> None:
    queue, clock = queue_of()
    (only,) = admit(queue, item(clock))
    # A long fill window, but the recent load says one row: the batch starts at once.
    batch = await asyncio.wait_for(queue.next_batch(max_size=8, max_wait_s=30.0, target=1), timeout=5)
    assert batch == [only]


async def test_a_batch_waits_for_its_target_then_starts_without_the_full_window() -> None:
    queue, clock = queue_of()
    first = admit(queue, item(clock))
    forming = asyncio.ensure_future(queue.next_batch(max_size=8, max_wait_s=30.0, target=lambda: 3))
    await asyncio.sleep(0)
    assert not forming.done()
    more = admit(queue, item(clock), item(clock))
    batch = await asyncio.wait_for(forming, timeout=5)  # well before the 30 s window
    assert batch == first + more
    assert queue.depth == 0


async def test_a_batch_that_does_not_fill_starts_when_the_window_ends() -> None:
    queue, clock = queue_of()
    admitted = admit(queue, item(clock), item(clock))
    batch = await asyncio.wait_for(queue.next_batch(max_size=8, max_wait_s=0.02, target=8), timeout=5)
    assert batch == admitted


async def test_batches_group_compatible_settings_in_arrival_order_up_to_max_size() -> None:
    queue, clock = queue_of(capacity=16)
    g1, s1, g2, g3, s2, g4 = admit(
        queue, item(clock), item(clock, SAMPLED), item(clock), item(clock), item(clock, SAMPLED), item(clock)
    )
    assert await queue.next_batch(max_size=3, max_wait_s=0, target=1) == [g1, g2, g3]
    assert await queue.next_batch(max_size=3, max_wait_s=0, target=1) == [s1, s2]
    assert await queue.next_batch(max_size=3, max_wait_s=0, target=1) == [g4]
    assert queue.depth == 0


async def test_cancelled_and_expired_items_are_dropped_before_compute() -> None:
    queue, clock = queue_of()
    gone, late, kept = admit(queue, item(clock), item(clock, deadline_in=1.0), item(clock, deadline_in=10.0))
    gone.cancel()
    clock.advance(2.0)
    assert await queue.next_batch(max_size=8, max_wait_s=0, target=1) == [kept]
    assert isinstance(gone.future.exception(), RequestCancelled)
    late_error = late.future.exception()
    assert isinstance(late_error, DeadlineExceeded)
    assert late_error.status_code == 504 and not late_error.during_generation


async def test_an_answered_item_is_skipped() -> None:
    # The service answers a request whose deadline passed (504) itself; the queue must not run it afterwards.
    queue, clock = queue_of()
    answered, kept = admit(queue, item(clock), item(clock))
    answered.resolve(DeadlineExceeded())
    assert await queue.next_batch(max_size=8, max_wait_s=0, target=1) == [kept]


async def test_close_hands_back_queued_work_and_stops_the_workers() -> None:
    queue, clock = queue_of()
    left = admit(queue, item(clock), item(clock))
    waiting = asyncio.ensure_future(queue.next_batch(max_size=8, max_wait_s=0, target=1))
    assert await waiting == left  # taken before the close
    admit(queue, item(clock))
    assert len(queue.close()) == 1
    assert await asyncio.wait_for(queue.next_batch(max_size=8, max_wait_s=0, target=1), timeout=5) == []
    with pytest.raises(QueueFull):
        queue.reserve(1)


# -- the batching loop with the real demo model --------------------------------------------------------------


class BatchLog:
    """A ``BatchObserver`` that keeps the size of every batch run."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def batch_finished(self, size: int, inference_s: float, ok: bool) -> None:
        self.sizes.append(size)

    def worker_replaced(self) -> None:
        pass


@pytest.fixture(scope="module")
def runner(demo_cache_dir: Path) -> TransformersRunner:
    return TransformersRunner(DEMO_CAUSAL_ID, path=str(demo_cache_dir / "tiny-causal-lm"), device="cpu")


async def test_batches_are_sized_for_the_recent_load(runner: TransformersRunner) -> None:
    clock = ManualClock()
    log = BatchLog()
    scheduler = ModelScheduler(
        "demo", runner, max_queue=16, max_batch_size=8, max_batch_wait_s=30.0, observer=log, clock=clock
    )
    scheduler.start()
    loop = asyncio.get_running_loop()

    def submit(n: int) -> list[WorkItem]:
        items = [WorkItem(loop, runner.encode(f"row {i}"), GREEDY, clock() + 60, clock=clock) for i in range(n)]
        scheduler.queue.reserve(n)
        scheduler.queue.put(items)
        return items

    async def answered(items: list[WorkItem]) -> None:
        await asyncio.wait_for(asyncio.gather(*(i.future for i in items)), timeout=20)

    try:
        # The decode loop is held admitting a one-row group while five more rows queue up: six rows in the system.
        runner.faults.set(FaultPlan(kind="stall", count=1, seconds=60))
        first = submit(1)
        await wait_until(lambda: runner.faults.injected == 1, what="the stall")
        second = submit(5)
        runner.faults.clear()
        # One row is generating, so five are expected: they join at once as one group (no 30 s wait).
        await answered(first + second)
        await wait_until(lambda: len(log.sizes) == 2, what="two groups")  # recorded just after their rows
        assert sorted(log.sizes) == [1, 5]
        # Nothing is running now and six rows were in the system a moment ago: the next group waits (within its
        # 30 s window) for the returning rows instead of starting with the first one alone.
        lone = submit(1)
        await asyncio.sleep(0.05)
        assert not any(i.future.done() for i in lone) and scheduler.queue.depth == 1
        await answered(lone + submit(5))
        await wait_until(lambda: len(log.sizes) == 3, what="the third group")
        assert log.sizes[-1] == 6
        # ... but once the load has been light for a while, a lone row starts at once despite the long window.
        clock.advance(5.0)
        await answered(submit(1))
        await wait_until(lambda: len(log.sizes) == 4, what="the fourth group")
        assert log.sizes[-1] == 1
    finally:
        runner.faults.clear()
        await scheduler.close(RequestCancelled())
