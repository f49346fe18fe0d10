"""One model's serving path: admission -> breaker -> queue -> scheduler, and back, with what it measured.

For each request: refuse while draining or not ready (503), ask the breaker (503 while open), reserve queue
slots (429 when full) *before* tokenizing, check the prompt's size (413: first its characters, before tokenizing,
then its tokens; a long prompt is tokenized off the event loop), queue the rows, and wait for
them within the request's deadline (504). The outcome goes to the breaker once: model faults and hung
generations count, bad input and cancellations do not. A cancelled caller (client gone) cancels its rows: they
leave the queue at once if still queued (freeing their slots), or are stopped within a few steps by the runner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.breaker import BreakerState, CircuitBreaker, Permit
from gateway.errors import (
    DeadlineExceeded,
    Draining,
    GatewayError,
    NotReady,
    PayloadTooLarge,
    counts_as_failure,
)
from gateway.runners.base import ModelRunner
from gateway.scheduler import ModelScheduler, WorkItem
from gateway.stats import GaugeSnapshot, RequestStats
from gateway.types import GenerationOutput, GenerationParams, Token

# The runner checks deadlines at every step and answers first; this grace only covers a stuck worker.
_DEADLINE_GRACE_S = 0.25
# A prompt longer than this is tokenized on a worker thread (a millisecond or so of tokenizing stays on the loop).
_ON_LOOP_CHARS = 4096
# With ``truncate``: tokens' worth of characters tokenized before the kept tail, so the cut falls in text whose
# tokens are dropped anyway.
_TAIL_MARGIN_TOKENS = 16


@dataclass(frozen=True)
class Limits:
    max_input_tokens: int


class TokenBudget(Protocol):
    """A key's token account (``gateway.ratelimit.TokenMeter``): a request is charged its prompt tokens plus
    ``max_new_tokens`` per row once tokenized, before it is queued (``RateLimited`` when that does not fit), and
    refunded what it did not generate when it ends."""

    async def charge(self, tokens: int) -> None: ...

    async def refund(self, tokens: int) -> None: ...


@dataclass
class Generation:
    """The outputs of one request's rows (one per prompt or segment) and what serving them measured."""

    outputs: list[GenerationOutput]
    stats: RequestStats


@dataclass(frozen=True)
class StreamEvent:
    """One step of a stream: first the admission (no token, no output: the rows are queued), then each token as
    it is chosen, and last the whole output with the request's stats."""

    token: Token | None = None
    output: GenerationOutput | None = None
    stats: RequestStats | None = None
    index: int = 0  # the row of the request (a request of several rows streams them together)

    @property
    def final(self) -> bool:
        return self.output is not None

    @property
    def admitted(self) -> bool:
        """The first event: admitted and queued, nothing generated yet."""
        return self.token is None and self.output is None


class Lifecycle:
    """Process-wide state the services consult: draining after SIGTERM."""

    def __init__(self) -> None:
        self.draining = False


class ModelService:
    """Serves one model: admits requests, consults its breaker, queues rows for its scheduler, waits for them.

    Deadlines are on the injected ``clock``, like the breaker's and the queue's timing; each row carries the same
    instant on ``time.monotonic``, the clock the runner (maybe in another process) checks it against.
    """

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
        return self.started and self.scheduler.workers_alive > 0 and self.breaker.state is not BreakerState.OPEN

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
        self,
        prompts: Sequence[str],
        params: Sequence[GenerationParams],
        timeout_s: float,
        encode: Callable[[str], list[int]] | None = None,
        budget: TokenBudget | None = None,
    ) -> Generation:
        """Run one request's rows (one per prompt) in the running batch; their outputs in prompt order."""
        self.in_flight += 1
        try:
            items, permit, deadline = await self._admit(prompts, params, timeout_s, encode, budget, stream=False)
            try:
                outputs = await self._wait_all(items, deadline)
            except BaseException as exc:
                self._settle(permit, items, exc)
                if budget is not None:  # what it generated is not known: its max_new_tokens come back
                    await budget.refund(sum(i.row.params.max_new_tokens for i in items))
                raise
            permit.success()
            if budget is not None:
                rows = zip(items, outputs, strict=True)
                await budget.refund(sum(i.row.params.max_new_tokens - o.generated_tokens for i, o in rows))
            return Generation(outputs, self._stats(items, outputs))
        finally:
            self.in_flight -= 1

    async def stream(
        self, prompt: str, params: GenerationParams, timeout_s: float, budget: TokenBudget | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Yield the admission, each token as it is chosen, then the output with the request's stats."""
        self.in_flight += 1
        try:
            items, permit, deadline = await self._admit([prompt], [params], timeout_s, None, budget, stream=True)
            item = items[0]
            assert item.events is not None
            sent = 0
            try:
                yield StreamEvent()
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
                        sent = output.generated_tokens
                        if budget is not None:
                            await budget.refund(params.max_new_tokens - sent)
                            budget = None
                        yield StreamEvent(output=output, stats=self._stats(items, [output]))
                        break
                    assert isinstance(event, Token)
                    sent += 1
                    yield StreamEvent(token=event)
            except BaseException as exc:
                self._settle(permit, items, exc)
                if budget is not None:
                    await budget.refund(params.max_new_tokens - sent)
                raise
            permit.success()
        finally:
            self.in_flight -= 1

    # -- internals --

    async def _admit(
        self,
        prompts: Sequence[str],
        params: Sequence[GenerationParams],
        timeout_s: float,
        encode: Callable[[str], list[int]] | None,
        budget: TokenBudget | None,
        *,
        stream: bool,
    ) -> tuple[list[WorkItem], Permit, float]:
        """Admit the rows or raise: draining, not ready, breaker, queue room, prompt length, then the key's
        tokens (a refusal there releases the breaker's permit untouched)."""
        if self.lifecycle.draining:
            raise Draining(retry_after=5.0)
        if not self.ready and self.breaker.state is not BreakerState.OPEN:
            raise NotReady(retry_after=5.0)
        permit = self.breaker.acquire()
        queue = self.scheduler.queue
        try:
            queue.reserve(len(prompts))
        except GatewayError:
            permit.release()
            raise
        try:
            items = await self._items(prompts, params, self._clock() + timeout_s, encode or self.runner.encode, stream)
            if budget is not None:
                await budget.charge(sum(len(i.row.input_ids) + i.row.params.max_new_tokens for i in items))
        except BaseException:
            queue.release(len(prompts))
            permit.release()
            raise
        queue.put(items)
        return items, permit, items[0].deadline

    async def _items(
        self,
        prompts: Sequence[str],
        params: Sequence[GenerationParams],
        deadline: float,
        encode: Callable[[str], list[int]],
        stream: bool,
    ) -> list[WorkItem]:
        """Tokenize each prompt (its slot is already reserved) and check its length."""
        loop = asyncio.get_running_loop()
        items: list[WorkItem] = []
        for prompt, p in zip(prompts, params, strict=True):
            ids = await self._tokens(prompt, p.truncate, encode)
            if not ids:
                ids = [self.runner.token_id("<s>") or 0]
            items.append(WorkItem(loop, ids, p, deadline, stream=stream, clock=self._clock))
        return items

    async def _tokens(self, prompt: str, truncate: int | None, encode: Callable[[str], list[int]]) -> list[int]:
        """The prompt's token ids within the limit (413 otherwise), at a cost bounded by the limit, not the prompt.

        A prompt of more characters than the limit's tokens can stand for is refused untokenized. With ``truncate``
        only the prompt's tail is tokenized: the characters its last tokens can stand for, and a margin before
        them so that the kept tokens are those of the whole prompt. A long text is tokenized on a worker thread.
        """
        limit = self.limits.max_input_tokens
        per_token = max(1, self.runner.max_token_chars)
        if truncate is None:
            if len(prompt) > limit * per_token:
                raise PayloadTooLarge(
                    f"the prompt has {len(prompt)} characters, more than {limit} tokens (the limit) can hold"
                )
            text = prompt
        else:
            text = prompt[-(min(truncate, limit + 1) + _TAIL_MARGIN_TOKENS) * per_token :]
        ids = encode(text) if len(text) <= _ON_LOOP_CHARS else await asyncio.to_thread(encode, text)
        if truncate is not None and len(ids) > truncate:
            ids = ids[-truncate:]
        if len(ids) > limit:
            raise PayloadTooLarge(f"the prompt has {len(ids)} tokens; the limit is {limit}")
        return ids

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
        if counts_as_failure(exc):
            permit.failure()
        else:
            permit.release()

    def _stats(self, items: list[WorkItem], outputs: list[GenerationOutput]) -> RequestStats:
        queue_s = max((i.started_at - i.enqueued_at for i in items if i.started_at is not None), default=0.0)
        for item, output in zip(items, outputs, strict=True):
            if item.started_at is not None:
                output.queue_s = item.started_at - item.enqueued_at
        first = outputs[0].first_token_s
        reasons = {o.finish_reason.value for o in outputs}
        return RequestStats(
            model=self.name,
            prompt_tokens=sum(len(i.row.input_ids) for i in items),
            generated_tokens=sum(o.generated_tokens for o in outputs),
            queue_s=queue_s,
            inference_s=max(o.inference_s for o in outputs),
            first_token_s=None if first is None else queue_s + first,
            batch_size=max(o.batch_size for o in outputs),
            finish_reason="length" if "length" in reasons else sorted(reasons)[0],
        )
