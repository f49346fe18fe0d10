"""The admission queue and the work item on their own: slots, batch forming, what is dropped before compute.

Work items are the real ``WorkItem`` the service queues; time is a ``ManualClock`` wherever a deadline matters.
Waits are bounded; the only timed wait is a batch-fill window, kept short.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

import pytest

from gateway.errors import DeadlineExceeded, QueueFull, RequestCancelled
from gateway.scheduler import AdmissionQueue, WorkItem
from gateway.types import FinishReason, GenerationOutput, GenerationParams, SamplingParams, Token
from tests.clock import ManualClock

GREEDY = GenerationParams(max_new_tokens=4)
SAMPLED = GenerationParams(max_new_tokens=4, sampling=SamplingParams(do_sample=True, temperature=0.7, seed=1))


def item(clock: ManualClock, params: GenerationParams = GREEDY, deadline_in: float = 60.0) -> WorkItem:
    return WorkItem(asyncio.get_running_loop(), [1, 2, 3], params, clock() + deadline_in, clock=clock)


def queue_of(capacity: int = 8) -> tuple[AdmissionQueue, ManualClock]:
    clock = ManualClock(start=0.0)
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


async def test_a_cancelled_queued_item_gives_its_slot_back_at_once() -> None:
    """No batch is formed meanwhile (a busy or stalled worker): the slot must not wait for one."""
    queue, clock = queue_of(capacity=2)
    gone, kept = admit(queue, item(clock), item(clock))
    with pytest.raises(QueueFull):
        queue.reserve(1)
    gone.cancel()
    assert isinstance(gone.future.exception(), RequestCancelled)
    assert queue.depth == 1 and not queue.full
    (late,) = admit(queue, item(clock))
    late.resolve(DeadlineExceeded())  # the service answers a request past its deadline, then cancels its rows
    late.cancel()
    assert isinstance(late.future.exception(), DeadlineExceeded) and queue.depth == 1
    (newcomer,) = admit(queue, item(clock))
    newcomer.cancel()
    assert await queue.next_batch(max_size=8, max_wait_s=0, target=1) == [kept]
    kept.cancel()  # taken into a batch: the runner drops it at its next step and answers it
    assert not kept.future.done() and kept.cancelled()


def test_an_answered_item_is_freed_without_the_cyclic_gc() -> None:
    """Item and row point at each other until the item is answered; after that, reference counting frees it
    (with its output) the moment its request lets go. The cyclic GC's full collections had stalled the event
    loop 12-19 ms every 1.5 s under load, sweeping up answered requests."""
    loop = asyncio.new_event_loop()
    gc.disable()
    try:
        answered = WorkItem(loop, [1, 2, 3], GREEDY, time.monotonic() + 60)
        token = Token(7, "x", -0.5, special=False)
        output = GenerationOutput(text="x", finish_reason=FinishReason.LENGTH, prompt_tokens=3, tokens=[token])
        answered.resolve(output)
        failed = WorkItem(loop, [1, 2, 3], GREEDY, time.monotonic() + 60)
        failed.resolve(DeadlineExceeded())
        pending = WorkItem(loop, [1, 2, 3], GREEDY, time.monotonic() + 60)
        refs = [weakref.ref(answered), weakref.ref(output), weakref.ref(failed), weakref.ref(pending)]
        del answered, output, failed, pending, token
        assert [ref() is None for ref in refs] == [True, True, True, False]  # the pending one is still in use
    finally:
        gc.enable()
        loop.close()


async def test_a_work_item_hands_what_the_runner_reports_from_its_thread_to_the_loop() -> None:
    clock = ManualClock(start=0.0)
    streamed = WorkItem(asyncio.get_running_loop(), [1, 2], GREEDY, clock() + 60, stream=True, clock=clock)
    tokens = [Token(3, "a", -0.1, False), Token(4, "b", -0.2, False)]
    output = GenerationOutput(text="ab", finish_reason=FinishReason.LENGTH, prompt_tokens=2, tokens=tokens)

    def runner_thread() -> None:  # what a decode loop does with a streamed row
        assert not streamed.cancelled()
        for token in tokens:
            streamed.on_token(token)
        streamed.on_done(output)

    worker = threading.Thread(target=runner_thread)
    worker.start()
    worker.join(5)
    assert streamed.events is not None
    events = [await asyncio.wait_for(streamed.events.get(), timeout=5) for _ in range(3)]
    assert events[:2] == tokens and WorkItem.is_done_marker(events[2])
    assert streamed.future.result() is output
    streamed.resolve(RequestCancelled())  # answered once: a later outcome changes nothing
    assert streamed.future.result() is output and streamed.cancelled()  # a runner still holding it drops the row


async def test_a_plain_work_item_has_no_event_queue_and_ignores_tokens() -> None:
    clock = ManualClock(start=0.0)
    plain = item(clock)
    assert plain.events is None and plain.batch_key == GREEDY.sampling and plain.deadline == 60.0
    plain.on_token(Token(3, "a", None, False))
    plain.on_done(DeadlineExceeded(during_generation=True))
    await asyncio.sleep(0)  # the answer is handed to the loop: set on its next iteration
    error = plain.future.exception()
    assert isinstance(error, DeadlineExceeded) and error.during_generation
