"""``ModelScheduler`` (``gateway.scheduler.feeder``) driven by the deterministic fake decoder.

The queue, the work items and the scheduler are the real ones; the decoder is ``FakeRunner``, stepped by the test,
so every batch, token and failure happens when the test says. Time is a ``ManualClock`` standing still; the only
real-time wait is the watchdog of the stall test (50 ms).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.errors import Draining, ModelError, OutOfMemory, RequestCancelled, WorkerStalled
from gateway.scheduler import ModelScheduler, WorkItem
from gateway.stats import BatchRecord, NullSink
from gateway.types import FinishReason, GenerationOutput, GenerationParams, SamplingParams
from tests.clock import ManualClock
from tests.unit.fake_runner import EOS, FakeRunner, decode_until, eventually, expected_ids, settle

GREEDY = GenerationParams(max_new_tokens=4)
SAMPLED = GenerationParams(max_new_tokens=4, sampling=SamplingParams(do_sample=True, temperature=0.7, seed=1))


class Observer(NullSink):
    """A stats sink that keeps the batches and replacements it is told of."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, bool]] = []
        self.replaced = 0

    def batch_finished(self, record: BatchRecord) -> None:
        self.batches.append((record.size, record.ok))

    def worker_replaced(self, model: str) -> None:
        self.replaced += 1


class Harness:
    def __init__(self, **settings: Any) -> None:
        self.clock = ManualClock(start=100.0)
        self.runner = FakeRunner(self.clock)
        self.observer = Observer()
        values: dict[str, Any] = {"max_queue": 16, "max_batch_size": 8, "max_batch_wait_s": 0.0}
        values.update(settings)
        self.scheduler = ModelScheduler(
            "fake",
            self.runner,
            sink=self.observer,
            clock=self.clock,
            **values,  # type: ignore[arg-type]
        )

    def item(
        self, ids: list[int] | None = None, params: GenerationParams = GREEDY, *, stream: bool = False
    ) -> WorkItem:
        loop = asyncio.get_running_loop()
        return WorkItem(loop, ids or [1, 2, 3], params, self.clock() + 60, stream=stream, clock=self.clock)

    def queue(self, *items: WorkItem) -> list[WorkItem]:
        """What the service does with a request's rows: reserve their slots, then queue them."""
        self.scheduler.queue.reserve(len(items))
        self.scheduler.queue.put(list(items))
        return list(items)

    async def decode_all(self, items: list[WorkItem], max_steps: int = 200) -> int:
        return await decode_until(self.runner, lambda: all(i.future.done() for i in items), "all answered", max_steps)


@pytest.fixture
async def harness() -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(**settings: Any) -> Harness:
        h = Harness(**settings)
        h.scheduler.start()
        made.append(h)
        return h

    yield build
    for h in made:
        await h.scheduler.close(RequestCancelled())


def token_ids(item: WorkItem) -> list[int]:
    return [t.id for t in item.future.result().tokens]


async def test_a_lone_row_starts_at_once_and_gets_the_decoders_tokens(harness: Callable[..., Harness]) -> None:
    h = harness(max_batch_wait_s=30.0)  # a long fill window: a lone row under light load must not wait for it
    (only,) = h.queue(h.item([1, 2, 3]))
    await eventually(lambda: h.runner.sizes() == [1], "the row handed to the decoder")
    assert only.started_at == h.clock() and h.scheduler.running_rows == 1
    await h.decode_all([only])
    output = only.future.result()
    assert token_ids(only) == [4, 5, 6, 7] and output.finish_reason is FinishReason.LENGTH
    assert output.text == "<4><5><6><7>" and output.prompt_tokens == 3
    await eventually(lambda: h.observer.batches == [(1, True)], "the batch reported")
    assert h.scheduler.running_rows == 0


async def test_running_rows_never_exceed_max_batch_size(harness: Callable[..., Harness]) -> None:
    h = harness(max_batch_size=2)
    items = h.queue(*(h.item([10 * i], GenerationParams(max_new_tokens=3)) for i in range(1, 6)))
    await h.decode_all(items)
    assert h.runner.largest_batch == 2 and sum(h.runner.sizes()) == 5
    assert [token_ids(i) for i in items] == [expected_ids([10 * i], 3) for i in range(1, 6)]


async def test_a_row_finishing_early_makes_room_before_its_batch_mate_is_answered(
    harness: Callable[..., Harness],
) -> None:
    h = harness(max_batch_size=2)
    early, late = h.queue(h.item([EOS - 2]), h.item([1], GenerationParams(max_new_tokens=10)))
    waiting = h.queue(h.item([20]))[0]
    await eventually(lambda: h.runner.sizes() == [2], "the first two rows handed over")
    await decode_until(h.runner, early.future.done, "the early row answered")
    assert early.future.result().finish_reason is FinishReason.EOS and token_ids(early) == [EOS - 1, EOS]
    await eventually(lambda: h.runner.sizes() == [2, 1], "the queued row handed over")
    assert not late.future.done()  # joined while its future batch mate was still generating
    await h.decode_all([late, waiting])
    assert h.runner.largest_batch == 2
    assert late.future.result().batch_size == 2 and token_ids(late) == expected_ids([1], 10)


async def test_rows_with_other_sampling_settings_go_in_a_submission_of_their_own(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    g1, s1, g2 = h.queue(h.item(), h.item(params=SAMPLED), h.item())
    await h.decode_all([g1, s1, g2])
    assert [[row.params for row in s.rows] for s in h.runner.submissions] == [[GREEDY, GREEDY], [SAMPLED]]
    assert s1.future.result().seed == 1


async def test_out_of_memory_on_a_batch_is_retried_in_halves(harness: Callable[..., Harness]) -> None:
    h = harness()
    items = h.queue(*(h.item([10 * i]) for i in range(1, 5)))
    await eventually(lambda: h.runner.sizes() == [4], "the batch handed over")
    h.runner.step()
    h.runner.fail(OutOfMemory())
    await h.decode_all(items)
    assert h.runner.sizes() == [4, 2, 2]
    assert [token_ids(i) for i in items] == [expected_ids([10 * i], 4) for i in range(1, 5)]  # each from its prompt
    await eventually(lambda: len(h.observer.batches) == 3, "three batches reported")
    assert h.observer.batches == [(4, False), (2, True), (2, True)]


async def test_out_of_memory_of_a_row_alone_fails_it(harness: Callable[..., Harness]) -> None:
    h = harness()
    (only,) = h.queue(h.item())
    await eventually(lambda: h.runner.sizes() == [1], "the row handed over")
    h.runner.fail(OutOfMemory())
    await eventually(only.future.done, "the row answered")
    assert isinstance(only.future.exception(), OutOfMemory)
    assert h.runner.sizes() == [1]  # nothing smaller to try, and nothing else running to wait for


async def test_out_of_memory_joining_a_busy_batch_waits_for_a_row_to_leave(harness: Callable[..., Harness]) -> None:
    h = harness()
    (running,) = h.queue(h.item([10]))
    await eventually(lambda: h.runner.sizes() == [1], "the first row decoding")
    (joining,) = h.queue(h.item([20], params=SAMPLED))
    await eventually(lambda: h.runner.sizes() == [1, 1], "the second row handed over")
    h.runner.fail(OutOfMemory(), h.runner.submissions[-1])
    await settle()
    assert not joining.future.done() and h.runner.sizes() == [1, 1]  # held back while the first row decodes
    await h.decode_all([running])
    await eventually(lambda: h.runner.sizes() == [1, 1, 1], "the row joined again once the first one left")
    await h.decode_all([joining])
    assert token_ids(joining) == expected_ids([20], 4)


async def test_out_of_memory_fails_a_streamed_row_that_sent_tokens_and_retries_the_other(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    streamed, plain = h.queue(h.item([10], stream=True), h.item([20]))
    await eventually(lambda: h.runner.sizes() == [2], "the batch handed over")
    h.runner.step()  # the streamed row's client has a token now: running it again would repeat it
    h.runner.fail(OutOfMemory())
    await h.decode_all([streamed, plain])
    error = streamed.future.exception()
    assert isinstance(error, OutOfMemory)
    assert h.runner.sizes() == [2, 1] and token_ids(plain) == expected_ids([20], 4)


async def test_a_model_error_fails_only_the_rows_of_its_submission(harness: Callable[..., Harness]) -> None:
    h = harness()
    (failing,) = h.queue(h.item())
    await eventually(lambda: h.runner.sizes() == [1], "the first submission")
    (other,) = h.queue(h.item(params=SAMPLED))
    await eventually(lambda: h.runner.sizes() == [1, 1], "the second submission")
    h.runner.fail(ModelError(), h.runner.submissions[0])
    await h.decode_all([failing, other])
    assert isinstance(failing.future.exception(), ModelError)
    assert isinstance(other.future.result(), GenerationOutput)
    (after,) = h.queue(h.item())  # feeding goes on
    await h.decode_all([after])
    assert after.future.result().finish_reason is FinishReason.LENGTH


async def test_a_stalled_decoder_is_reset_and_its_rows_fail_as_worker_stalled(harness: Callable[..., Harness]) -> None:
    h = harness(watchdog_s=0.05)
    (stuck,) = h.queue(h.item())
    await eventually(stuck.future.done, "the watchdog")  # the fake is never stepped: a stuck decode loop
    assert isinstance(stuck.future.exception(), WorkerStalled) and stuck.cancelled()
    assert [type(r) for r in h.runner.resets] == [WorkerStalled]
    assert h.observer.replaced == 1 and h.observer.batches == [(1, False)]
    (after,) = h.queue(h.item())
    await h.decode_all([after])
    assert token_ids(after) == [4, 5, 6, 7]


async def test_a_cancelled_running_row_is_dropped_and_its_batch_mate_goes_on(harness: Callable[..., Harness]) -> None:
    h = harness()
    gone, kept = h.queue(h.item([10]), h.item([20]))
    await eventually(lambda: h.runner.sizes() == [2], "the batch handed over")
    h.runner.step()
    gone.cancel()  # the client went away
    await h.decode_all([gone, kept])
    assert isinstance(gone.future.exception(), RequestCancelled)
    assert token_ids(kept) == expected_ids([20], 4)


async def test_a_submit_that_raises_fails_its_rows_and_feeding_goes_on(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.runner.submit_error = RuntimeError("a bug in the runner")
    (first,) = h.queue(h.item())
    await eventually(first.future.done, "the row answered")
    assert isinstance(first.future.exception(), ModelError)
    (second,) = h.queue(h.item())
    await h.decode_all([second])
    assert token_ids(second) == [4, 5, 6, 7]


async def test_close_answers_queued_rows_and_stops_feeding(harness: Callable[..., Harness]) -> None:
    h = harness(max_batch_size=1)
    running, *queued = h.queue(h.item(), h.item(), h.item())
    await eventually(lambda: h.runner.sizes() == [1], "the first row handed over")
    assert h.scheduler.workers_alive == 1
    await h.scheduler.close(Draining())
    assert all(isinstance(i.future.exception(), Draining) for i in queued)
    assert running.cancelled() and h.scheduler.workers_alive == 0
    await decode_until(h.runner, running.future.done, "the running row dropped")
    assert isinstance(running.future.exception(), RequestCancelled)
    assert h.runner.sizes() == [1]


async def test_abandon_answers_queued_and_running_rows_at_once(harness: Callable[..., Harness]) -> None:
    h = harness(max_batch_size=1)
    running, queued = h.queue(h.item(), h.item())
    await eventually(lambda: h.runner.sizes() == [1], "the first row handed over")
    assert h.scheduler.abandon(Draining()) == 2
    assert all(isinstance(i.future.exception(), Draining) for i in (running, queued))
    assert running.cancelled()
    h.runner.step()  # the decoder drops the row; its late answer changes nothing
    await settle()
    assert h.runner.running_rows == [] and isinstance(running.future.exception(), Draining)


async def test_workers_alive_follows_the_feeder_and_the_decode_loop() -> None:
    h = Harness()
    assert h.scheduler.workers_alive == 0
    h.scheduler.start()
    assert h.runner.started and h.scheduler.workers_alive == 1
    h.runner.loop_died = True
    assert h.scheduler.workers_alive == 0
    h.runner.loop_died = False
    await h.scheduler.close(Draining())
    assert h.scheduler.workers_alive == 0


async def test_with_rows_running_a_group_waits_for_half_of_the_rows_expected_back(
    harness: Callable[..., Harness],
) -> None:
    h = harness(max_batch_wait_s=30.0)
    short = GenerationParams(max_new_tokens=1)
    first = h.queue(*(h.item([10 * i], short) for i in range(1, 8)), h.item([1], GenerationParams(max_new_tokens=50)))
    await eventually(lambda: h.runner.sizes() == [8], "the first group: all queued rows, the model being idle")
    h.runner.step()  # seven rows answered, one still generating: seven expected back, so wait for three
    await eventually(lambda: all(i.future.done() for i in first[:7]), "seven answers")
    h.queue(h.item(), h.item())
    await settle()
    assert h.runner.sizes() == [8]  # two of the three: still waiting (the 30 s window is far off)
    h.queue(h.item())
    await eventually(lambda: h.runner.sizes() == [8, 3], "the group of three")


async def test_once_the_load_window_passed_a_row_starts_at_once_beside_running_rows(
    harness: Callable[..., Harness],
) -> None:
    h = harness(max_batch_wait_s=30.0)
    short = GenerationParams(max_new_tokens=1)
    first = h.queue(*(h.item([10 * i], short) for i in range(1, 8)), h.item([1], GenerationParams(max_new_tokens=50)))
    await eventually(lambda: h.runner.sizes() == [8], "the first group")
    h.runner.step()
    await eventually(lambda: all(i.future.done() for i in first[:7]), "seven answers")
    h.clock.advance(1.5)  # the peak load seen at admission is over a second old
    h.queue(h.item())
    await eventually(lambda: h.runner.sizes() == [8, 1], "the new row handed over alone")
