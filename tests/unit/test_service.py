"""``ModelService`` (``gateway.service``): admission, the breaker, the queue, the wait for the rows, and the stats.

Everything but the model is the real code: the service, its ``CircuitBreaker``, its ``ModelScheduler`` with the
admission queue and work items; the decoder is ``FakeRunner``, stepped by the test. Time is a ``ManualClock``
standing still, so every deadline passes when the test says. Prompts are token ids written as numbers
(``"1 2 3"``) through the ``encode`` the service takes (the translator's seam), so each test knows its tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from gateway.breaker import BreakerState, CircuitBreaker
from gateway.errors import (
    BreakerOpen,
    DeadlineExceeded,
    Draining,
    GatewayError,
    ModelError,
    NotReady,
    OutOfMemory,
    PayloadTooLarge,
    QueueFull,
    RequestCancelled,
)
from gateway.scheduler import ModelScheduler
from gateway.service import Generation, Lifecycle, Limits, ModelService, StreamEvent
from gateway.types import FinishReason, GenerationParams
from tests.clock import ManualClock
from tests.unit.fake_runner import EOS, FakeRunner, decode_until, eventually, settle

T = TypeVar("T")
THREE = GenerationParams(max_new_tokens=3)


class Encoder:
    """``"1 2 3"`` -> ``[1, 2, 3]``, counting its calls (a full queue must answer before any tokenizing)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, text: str) -> list[int]:
        self.calls += 1
        return [int(word) for word in text.split()]


class Stack:
    """A service over the real scheduler and breaker, and the fake decoder, all on one manual clock."""

    def __init__(self, *, max_queue: int = 4, max_batch_size: int = 8, max_input_tokens: int = 8, **breaker: Any):
        self.clock = ManualClock(start=100.0)
        self.runner = FakeRunner(self.clock)
        self.runner.max_token_chars = 8  # the Encoder's words: a token stands for a few characters and a space
        self.scheduler = ModelScheduler(
            "fake",
            self.runner,
            max_queue=max_queue,
            max_batch_size=max_batch_size,
            max_batch_wait_s=0.0,
            clock=self.clock,
        )
        values: dict[str, Any] = {"failure_threshold": 2, "recovery_s": 30.0, "half_open_probes": 1}
        values.update(breaker)
        self.breaker = CircuitBreaker(clock=self.clock, **values)
        self.lifecycle = Lifecycle()
        self.service = ModelService(
            "fake", self.runner, self.scheduler, self.breaker, Limits(max_input_tokens), self.lifecycle, self.clock
        )
        self.encode = Encoder()

    def start(self) -> None:
        self.scheduler.start()
        self.service.started = True

    def generate(
        self, *prompts: str, params: GenerationParams = THREE, timeout_s: float = 60.0
    ) -> Coroutine[Any, Any, Generation]:
        return self.service.generate(list(prompts), [params] * len(prompts), timeout_s, self.encode)

    async def submit(
        self, *prompts: str, params: GenerationParams = THREE, timeout_s: float = 60.0
    ) -> asyncio.Task[Generation]:
        """Start a request and let it reach the queue (or the decoder)."""
        task = asyncio.ensure_future(self.generate(*prompts, params=params, timeout_s=timeout_s))
        await settle()
        return task

    def half_open(self) -> None:
        self.breaker.trip()
        self.clock.advance(self.breaker.recovery_s)
        assert self.breaker.state is BreakerState.HALF_OPEN


@pytest.fixture
async def make_stack() -> AsyncIterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def build(start: bool = True, **options: Any) -> Stack:
        stack = Stack(**options)
        if start:
            stack.start()
        made.append(stack)
        return stack

    yield build
    for stack in made:
        await stack.scheduler.close(RequestCancelled())


async def finish(stack: Stack, task: asyncio.Future[T]) -> T:
    await decode_until(stack.runner, task.done, "the request answered")
    return task.result()


async def refused(awaitable: Awaitable[Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await awaitable
    return caught.value


# -- admission, in order --


async def test_draining_refuses_first_even_when_not_ready(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(start=False)
    s.lifecycle.draining = True
    error = await refused(s.generate("1 2"))
    assert isinstance(error, Draining) and error.status_code == 503 and error.retry_after == 5.0
    s.lifecycle.draining = False
    error = await refused(s.generate("1 2"))
    assert isinstance(error, NotReady) and error.status_code == 503 and error.retry_after == 5.0
    assert s.encode.calls == 0 and s.scheduler.queue.depth == 0 and s.service.in_flight == 0


async def test_not_ready_while_the_feeder_is_not_running(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(start=False)
    s.service.started = True  # started, but no feeder and no decode loop: workers_alive is 0
    assert not s.service.ready
    assert isinstance(await refused(s.generate("1")), NotReady)
    s.start()
    assert s.service.ready
    assert (await finish(s, await s.submit("1"))).outputs[0].text == "<2><3><4>"


async def test_an_open_breaker_refuses_with_its_retry_after(make_stack: Callable[..., Stack]) -> None:
    s = make_stack()
    s.breaker.trip()
    s.clock.advance(12.0)
    assert not s.service.ready  # an open breaker: not ready, yet the answer is circuit_open, not not_ready
    error = await refused(s.generate("1 2"))
    assert isinstance(error, BreakerOpen) and error.status_code == 503
    assert error.retry_after == pytest.approx(18.0)  # what is left of the 30 s open period
    assert s.encode.calls == 0 and s.scheduler.queue.depth == 0


async def test_a_full_queue_answers_429_before_tokenizing(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(max_queue=1, max_batch_size=1)
    running = await s.submit("1")  # in the decoder
    queued = await s.submit("2")  # the queue's one slot
    assert s.scheduler.running_rows == 1 and s.scheduler.queue.depth == 1 and s.encode.calls == 2
    assert isinstance(s.service.refusal(), QueueFull)
    error = await refused(s.generate("3"))
    assert isinstance(error, QueueFull) and error.status_code == 429 and error.retry_after == 1.0
    assert s.encode.calls == 2  # refused without tokenizing
    await finish(s, running)
    await finish(s, queued)
    assert s.service.refusal() is None and s.breaker.state is BreakerState.CLOSED  # a 429 is no failure


async def test_a_429_gives_the_half_open_probe_back(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(max_queue=2)
    s.half_open()
    s.scheduler.queue.reserve(2)  # the slots of another request still being tokenized
    assert isinstance(await refused(s.generate("1")), QueueFull)
    s.scheduler.queue.release(2)
    # The one probe of the half-open breaker is free again: this request is admitted, and its success closes it.
    await finish(s, await s.submit("1"))
    assert s.breaker.state is BreakerState.CLOSED


async def test_too_many_tokens_is_413_and_frees_the_slot_and_the_probe(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(max_input_tokens=4)
    s.half_open()
    error = await refused(s.generate("1 2 3 4 5"))
    assert isinstance(error, PayloadTooLarge) and error.status_code == 413 and "5 tokens" in error.message
    assert s.scheduler.queue.depth == 0 and s.service.in_flight == 0
    assert s.breaker.state is BreakerState.HALF_OPEN  # bad input moves nothing
    await finish(s, await s.submit("1 2 3 4"))  # the probe was given back: admitted, and it closes the breaker
    assert s.breaker.state is BreakerState.CLOSED


async def test_truncate_keeps_the_last_tokens_within_the_limit(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(max_input_tokens=4)
    params = GenerationParams(max_new_tokens=2, truncate=3)
    result = await finish(s, await s.submit("1 2 3 4 5 6", params=params))
    assert s.runner.submissions[0].rows[0].input_ids == [4, 5, 6]
    assert result.stats.prompt_tokens == 3 and result.outputs[0].text == "<7><8>"


# -- success and its stats --


async def test_success_returns_outputs_in_prompt_order_with_stats(make_stack: Callable[..., Stack]) -> None:
    s = make_stack()
    params = GenerationParams(max_new_tokens=4)
    task = await s.submit("1 2 3", f"{EOS - 2}", params=params)  # the second row ends on EOS after 2 tokens
    result = await finish(s, task)
    first, second = result.outputs
    assert first.text == "<4><5><6><7>" and first.finish_reason is FinishReason.LENGTH
    assert second.tokens[-1].id == EOS and second.finish_reason is FinishReason.EOS
    stats = result.stats
    assert stats.model == "fake" and stats.prompt_tokens == 4 and stats.generated_tokens == 6
    assert stats.batch_size == 2  # both rows decoded together
    assert stats.finish_reason == "length"  # any row cut by length makes the request's reason "length"
    assert stats.queue_s == 0.0  # the model was idle: they started at once
    assert s.breaker.state is BreakerState.CLOSED and s.service.in_flight == 0


async def test_queue_s_is_the_time_rows_waited_for_the_decoder(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(max_batch_size=1)
    first = await s.submit("1")
    waiting = await s.submit("2")
    assert s.scheduler.queue.depth == 1
    s.clock.advance(2.5)
    await finish(s, first)
    result = await finish(s, waiting)
    assert result.stats.queue_s == pytest.approx(2.5) and result.outputs[0].queue_s == pytest.approx(2.5)
    assert first.result().stats.queue_s == 0.0 and result.stats.batch_size == 1


async def test_batch_size_is_the_most_rows_any_of_its_rows_ran_with(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(max_batch_size=3)
    short = await s.submit("1", "2", params=GenerationParams(max_new_tokens=1))
    long = await s.submit("10", "20", params=GenerationParams(max_new_tokens=5))
    assert s.runner.sizes() == [2, 1]  # one row of the second request joined; the other waits for room
    result = await finish(s, long)
    assert s.runner.sizes() == [2, 1, 1] and short.done()
    assert [o.batch_size for o in result.outputs] == [3, 2]  # with the short rows, then with its sibling only
    assert result.stats.batch_size == 3


# -- outcomes reported to the breaker --


async def test_model_errors_count_bad_input_and_cancellation_do_not(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(max_input_tokens=4)  # failure_threshold 2: two consecutive failures open it
    task = await s.submit("1")
    s.runner.fail(ModelError())
    assert isinstance(await refused(task), ModelError)
    assert s.breaker.state is BreakerState.CLOSED
    for _ in range(3):  # neither failures nor successes: a success would reset the consecutive count
        assert isinstance(await refused(s.generate("1 2 3 4 5")), PayloadTooLarge)
        task = await s.submit("1")
        task.cancel()
        await settle()
        assert task.cancelled()
    assert s.breaker.state is BreakerState.CLOSED
    task = await s.submit("1")
    s.runner.fail(ModelError())
    assert isinstance(await refused(task), ModelError)
    assert s.breaker.state is BreakerState.OPEN


async def test_a_success_resets_the_consecutive_failures(make_stack: Callable[..., Stack]) -> None:
    s = make_stack()
    for _ in range(3):
        task = await s.submit("1")
        s.runner.fail(ModelError())
        assert isinstance(await refused(task), ModelError)
        await finish(s, await s.submit("1"))
    assert s.breaker.state is BreakerState.CLOSED


async def test_out_of_memory_at_minimum_load_counts_and_repeats_open_the_breaker(
    make_stack: Callable[..., Stack],
) -> None:
    s = make_stack(failure_threshold=2)
    task = await s.submit("1")
    s.runner.fail(OutOfMemory())  # a lone row with nothing else decoding: no retry, an ordinary failure
    assert isinstance(await refused(task), OutOfMemory)
    assert s.breaker.state is BreakerState.CLOSED  # the first one does not trip it
    task = await s.submit("1")
    s.runner.fail(OutOfMemory())
    assert isinstance(await refused(task), OutOfMemory)
    assert s.breaker.state is BreakerState.OPEN  # the second in a row reaches the threshold
    assert isinstance(await refused(s.generate("1")), BreakerOpen)


# -- cancellation --


async def test_a_cancelled_caller_takes_its_queued_rows_out_of_the_queue(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(max_queue=2, max_batch_size=1)
    running = await s.submit("1")
    queued = await s.submit("5", "6")
    assert s.scheduler.queue.depth == 2 and s.service.in_flight == 2
    queued.cancel()
    await settle()
    assert queued.cancelled() and s.scheduler.queue.depth == 0 and s.service.in_flight == 1
    await finish(s, running)
    await settle()
    assert s.runner.sizes() == [1]  # the cancelled rows never reached the decoder
    assert s.breaker.state is BreakerState.CLOSED


async def test_a_cancelled_caller_stops_its_running_rows(make_stack: Callable[..., Stack]) -> None:
    s = make_stack()
    task = await s.submit("1", params=GenerationParams(max_new_tokens=50))
    s.runner.step()
    assert len(s.runner.running_rows) == 1
    task.cancel()
    await settle()
    assert task.cancelled() and s.service.in_flight == 0
    s.runner.step()  # the decoder drops the row at its next step
    assert s.runner.running_rows == [] and s.runner.submissions[0].done.done()
    assert s.breaker.state is BreakerState.CLOSED


# -- deadlines (504) --


async def test_a_deadline_passing_in_the_queue_is_504_and_no_failure(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(max_batch_size=1, failure_threshold=1)
    running = await s.submit("1", timeout_s=600.0)
    late = await s.submit("2", timeout_s=10.0)
    s.clock.advance(11.0)
    await finish(s, running)  # the feeder forms its next group and finds the queued row's deadline passed
    error = await refused(late)
    assert isinstance(error, DeadlineExceeded) and error.status_code == 504 and not error.during_generation
    assert s.runner.sizes() == [1] and s.breaker.state is BreakerState.CLOSED


async def test_a_deadline_passing_mid_generation_is_504_and_a_failure(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(failure_threshold=1)
    task = await s.submit("1", params=GenerationParams(max_new_tokens=50), timeout_s=10.0)
    s.runner.step()
    s.clock.advance(10.5)
    error = await finish_error(s, task)
    assert isinstance(error, DeadlineExceeded) and error.during_generation
    assert s.breaker.state is BreakerState.OPEN  # a hung generation counts


async def test_a_stuck_decoder_is_answered_504_by_the_service(make_stack: Callable[..., Stack]) -> None:
    # The one real-time wait of this file: the service's own timer (deadline plus a 0.25 s grace) is
    # ``asyncio.wait`` in real seconds; a decoder that never steps leaves nobody else to answer.
    s = make_stack(failure_threshold=1)
    error = await refused(s.generate("1", timeout_s=0.01))
    assert isinstance(error, DeadlineExceeded) and error.during_generation
    assert s.breaker.state is BreakerState.OPEN and s.service.in_flight == 0
    s.runner.step()
    assert s.runner.running_rows == []  # the row was cancelled: the decoder drops it


async def finish_error(stack: Stack, task: asyncio.Task[Generation]) -> BaseException:
    await decode_until(stack.runner, task.done, "the request answered")
    error = task.exception()
    assert error is not None
    return error


# -- streaming --


async def test_stream_yields_admission_then_tokens_then_the_output_with_stats(
    make_stack: Callable[..., Stack],
) -> None:
    s = make_stack()
    events = s.service.stream("abc", GenerationParams(max_new_tokens=3), 60.0)
    admitted = await anext(events)
    assert admitted.admitted and not admitted.final and admitted.token is None and admitted.stats is None
    assert s.service.in_flight == 1 and s.scheduler.queue.depth + s.scheduler.running_rows == 1
    seen: list[StreamEvent] = []
    reader = asyncio.ensure_future(collect(events, seen))
    await decode_until(s.runner, reader.done, "the stream ended")
    *tokens, last = seen
    assert [e.token.text for e in tokens if e.token] == ["<51>", "<52>", "<53>"]  # "c" encodes to 50
    assert all(not e.admitted and not e.final for e in tokens)
    assert last.final and last.output is not None and last.stats is not None
    assert last.output.text == "".join(e.token.text for e in tokens if e.token)
    assert last.stats.prompt_tokens == 3 and last.stats.generated_tokens == 3 and last.stats.finish_reason == "length"
    assert s.service.in_flight == 0 and s.breaker.state is BreakerState.CLOSED


async def collect(events: AsyncIterator[StreamEvent], into: list[StreamEvent]) -> None:
    async for event in events:
        into.append(event)


async def test_a_refused_stream_raises_on_its_first_step(make_stack: Callable[..., Stack]) -> None:
    s = make_stack()
    s.lifecycle.draining = True
    events = s.service.stream("a", THREE, 60.0)
    with pytest.raises(Draining):
        await anext(events)
    assert s.service.in_flight == 0


async def test_a_stream_past_its_deadline_is_504(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(failure_threshold=1)
    events = s.service.stream("a", GenerationParams(max_new_tokens=50), 10.0)
    assert (await anext(events)).admitted
    await settle()  # the feeder hands the row to the decoder
    s.runner.step()
    assert (await anext(events)).token is not None
    s.clock.advance(10.5)  # past the deadline and its grace: the service answers without waiting for the runner
    with pytest.raises(DeadlineExceeded) as caught:
        await anext(events)
    assert caught.value.during_generation and s.breaker.state is BreakerState.OPEN and s.service.in_flight == 0


async def test_closing_a_stream_cancels_its_row_and_is_no_failure(make_stack: Callable[..., Stack]) -> None:
    s = make_stack(failure_threshold=1)
    events = s.service.stream("a", GenerationParams(max_new_tokens=50), 60.0)
    await anext(events)
    await settle()
    s.runner.step()
    assert (await anext(events)).token is not None
    await events.aclose()  # the client went away
    assert s.service.in_flight == 0
    s.runner.step()
    await eventually(lambda: s.runner.running_rows == [], "the row dropped")
    assert s.breaker.state is BreakerState.CLOSED
