"""The one seam between HTTP and the engine: admission -> breaker -> queue -> scheduler, and back.

For each request: refuse while draining or not ready (503), ask the breaker (503 while open), reserve queue
slots (429 when full) *before* tokenizing, check the prompt's token count (413), queue the rows, and wait for
them within the request's deadline (504). The outcome goes to the breaker once: model faults and hung
generations count, bad input and cancellations do not. A cancelled caller (client gone) cancels its rows: they
leave the queue at once if still queued (freeing their slots), or are stopped within a few steps by the runner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from gateway.breaker import BreakerState, CircuitBreaker, Permit
from gateway.errors import (
    DeadlineExceeded,
    Draining,
    GatewayError,
    NotReady,
    OutOfMemory,
    PayloadTooLarge,
    counts_as_failure,
)
from gateway.runners.base import ModelRunner
from gateway.scheduler import ModelScheduler, WorkItem
from gateway.stats import GaugeSnapshot, RequestRecord
from gateway.types import GenerationOutput, GenerationParams, Token

# The runner checks deadlines at every step and answers first; this grace only covers a stuck worker.
_DEADLINE_GRACE_S = 0.25


@dataclass(frozen=True)
class Limits:
    max_input_tokens: int


class Lifecycle:
    """Process-wide state the services consult: draining after SIGTERM."""

    def __init__(self) -> None:
        self.draining = False


class ModelService:
    def __init__(
        self,
        name: str,
        runner: ModelRunner,
        scheduler: ModelScheduler,
        breaker: CircuitBreaker,
        limits: Limits,
        lifecycle: Lifecycle,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.runner = runner
        self.scheduler = scheduler
        self.breaker = breaker
        self.limits = limits
        self.lifecycle = lifecycle
        self._clock = clock
        self.in_flight = 0
        self.started = False

    # -- state --

    @property
    def ready(self) -> bool:
        return self.started and self.scheduler.workers_alive > 0 and self.breaker.state.name != "OPEN"

    def refusal(self) -> GatewayError | None:
        """The 429 a new request would get from ``_admit`` whatever its body, or None.

        Only for a full queue with everything else in order (not draining, ready, breaker closed), where
        ``_admit`` would refuse it with the same error; any other case takes the normal path. The HTTP layer asks
        this before routing and parsing, so that a rejection under overload costs as little as possible.
        """
        if self.lifecycle.draining or not self.ready or self.breaker.state is not BreakerState.CLOSED:
            return None
        queue = self.scheduler.queue
        return queue.refusal() if queue.full else None

    def snapshot(self) -> GaugeSnapshot:
        return GaugeSnapshot(
            model=self.name,
            queue_depth=self.scheduler.queue.depth,
            queue_capacity=self.scheduler.queue.capacity,
            in_flight=self.in_flight,
            breaker_state=int(self.breaker.state),
            workers_alive=self.scheduler.workers_alive,
        )

    # -- requests --

    async def generate(
        self, prompt: str, params: GenerationParams, timeout_s: float, record: RequestRecord
    ) -> GenerationOutput:
        return (await self.generate_many([prompt], [params], timeout_s, record))[0]

    async def generate_many(
        self,
        prompts: Sequence[str],
        params: Sequence[GenerationParams],
        timeout_s: float,
        record: RequestRecord,
        encode: Callable[[str], list[int]] | None = None,
    ) -> list[GenerationOutput]:
        self.in_flight += 1
        try:
            items, permit, deadline = self._admit(prompts, params, timeout_s, record, encode, stream=False)
            try:
                outputs = await self._wait_all(items, deadline)
            except BaseException as exc:
                self._settle(permit, items, exc)
                raise
            permit.success()
            self._fill(record, items, outputs)
            return outputs
        finally:
            self.in_flight -= 1

    async def stream(
        self, prompt: str, params: GenerationParams, timeout_s: float, record: RequestRecord
    ) -> AsyncGenerator[Token | GenerationOutput, None]:
        """Yield tokens as they are chosen, then the final ``GenerationOutput``."""
        self.in_flight += 1
        try:
            items, permit, deadline = self._admit([prompt], [params], timeout_s, record, None, stream=True)
            item = items[0]
            assert item.events is not None
            try:
                while True:
                    remaining = deadline - self._clock() + _DEADLINE_GRACE_S
                    try:
                        event = await asyncio.wait_for(item.events.get(), max(remaining, 0.0))
                    except TimeoutError:
                        error = DeadlineExceeded(during_generation=item.started_at is not None)
                        item.resolve(error)
                        item.cancel()
                        raise error from None
                    if WorkItem.is_done_marker(event):
                        output = item.future.result()
                        self._fill(record, items, [output])
                        yield output
                        break
                    assert isinstance(event, Token)
                    yield event
            except BaseException as exc:
                self._settle(permit, items, exc)
                raise
            permit.success()
        finally:
            self.in_flight -= 1

    # -- internals --

    def _admit(
        self,
        prompts: Sequence[str],
        params: Sequence[GenerationParams],
        timeout_s: float,
        record: RequestRecord,
        encode: Callable[[str], list[int]] | None,
        *,
        stream: bool,
    ) -> tuple[list[WorkItem], Permit, float]:
        if self.lifecycle.draining:
            raise Draining(retry_after=5.0)
        if not self.ready and self.breaker.state.name != "OPEN":
            raise NotReady(retry_after=5.0)
        permit = self.breaker.acquire()
        queue = self.scheduler.queue
        try:
            queue.reserve(len(prompts))
        except GatewayError:
            permit.release()
            raise
        try:
            encode = encode or self.runner.encode
            loop = asyncio.get_running_loop()
            deadline = self._clock() + timeout_s
            items: list[WorkItem] = []
            for prompt, p in zip(prompts, params, strict=True):
                ids = encode(prompt)
                if p.truncate is not None and len(ids) > p.truncate:
                    ids = ids[-p.truncate :]
                record.prompt_tokens += len(ids)
                if len(ids) > self.limits.max_input_tokens:
                    raise PayloadTooLarge(
                        f"the prompt has {len(ids)} tokens; the limit is {self.limits.max_input_tokens}"
                    )
                if not ids:
                    ids = [self.runner.token_id("<s>") or 0]
                items.append(WorkItem(loop, ids, p, deadline, stream=stream, clock=self._clock))
        except BaseException:
            queue.release(len(prompts))
            permit.release()
            raise
        queue.put(items)
        return items, permit, deadline

    async def _wait_all(self, items: list[WorkItem], deadline: float) -> list[GenerationOutput]:
        remaining = max(deadline - self._clock() + _DEADLINE_GRACE_S, 0.0)
        await asyncio.wait([i.future for i in items], timeout=remaining)
        for item in items:
            if not item.future.done():
                item.resolve(DeadlineExceeded(during_generation=item.started_at is not None))
                item.cancel()
        return [i.future.result() for i in items]

    def _settle(self, permit: Permit, items: list[WorkItem], exc: BaseException) -> None:
        for item in items:
            item.cancel()
        if isinstance(exc, OutOfMemory) and exc.fatal:
            self.breaker.trip()
        if counts_as_failure(exc):
            permit.failure()
        else:
            permit.release()

    def _fill(self, record: RequestRecord, items: list[WorkItem], outputs: list[GenerationOutput]) -> None:
        record.model = self.name
        record.generated_tokens = sum(o.generated_tokens for o in outputs)
        record.batch_size = max(o.batch_size for o in outputs)
        queue_s = max((i.started_at - i.enqueued_at for i in items if i.started_at is not None), default=0.0)
        record.queue_s = queue_s
        record.inference_s = max(o.inference_s for o in outputs)
        first = outputs[0].first_token_s
        record.first_token_s = None if first is None else queue_s + first
        reasons = {o.finish_reason.value for o in outputs}
        record.finish_reason = "length" if "length" in reasons else sorted(reasons)[0]
        for item, output in zip(items, outputs, strict=True):
            if item.started_at is not None:
                output.queue_s = item.started_at - item.enqueued_at
