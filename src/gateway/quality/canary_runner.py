"""The periodic canary: every ``interval_s`` it sends each case through the full serving path (the ``send``
callable the gateway gives it), checks the answer and reports a ``CanaryRecord`` per case to its sink.

``send(case)`` must take the same path as a user request (admission, queue, batch, runner) and return the
answer's text and the model that answered; any exception it raises is an ``error`` result, and so is an answer
later than ``timeout_s``. Checks that need language identification or chrF run on a worker thread. Cases run
one after the other, so a canary never adds more than one request to the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.quality.canary import CanaryCase, CheckResult, check_answer
from gateway.quality.langid import LanguageIdentifier
from gateway.stats import CanaryRecord

__all__ = ["CanaryAnswer", "CanaryRunner", "CanarySink"]

log = logging.getLogger("gateway.canary")

RECENT = 20  # checks per model in ``status``'s pass ratio


@dataclass(frozen=True)
class CanaryAnswer:
    text: str
    model: str


class CanarySink(Protocol):
    def canary_finished(self, record: CanaryRecord) -> None: ...


CanarySend = Callable[[CanaryCase], Awaitable[CanaryAnswer]]


class CanaryRunner:
    """Runs ``cases`` every ``interval_s`` seconds (0: never) until ``stop()``.

    ``clock`` measures durations (monotonic), ``wall`` stamps results (for the last-success gauge); ``sleep`` is
    injectable so tests need not wait for the interval.
    """

    def __init__(
        self,
        cases: Sequence[CanaryCase],
        send: CanarySend,
        sink: CanarySink,
        *,
        interval_s: float,
        timeout_s: float = 60.0,
        identifier: LanguageIdentifier | None = None,
        default_model: Callable[[CanaryCase], str] = lambda case: case.model or "",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.cases = list(cases)
        self.send = send
        self.sink = sink
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.identifier = identifier
        self.default_model = default_model
        self.clock = clock
        self.wall = wall
        self.sleep = sleep
        self.last: dict[str, CanaryRecord] = {}  # the latest record of each case, by case name
        self._recent: dict[str, deque[CanaryRecord]] = {}  # the last RECENT records of each model
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0 and bool(self.cases)

    async def run_once(self) -> list[CanaryRecord]:
        """Check every case once; each record goes to the sink as soon as it is known."""
        records = []
        for case in self.cases:
            record = await self._check(case)
            self.last[case.name] = record
            self._recent.setdefault(record.model, deque(maxlen=RECENT)).append(record)
            self.sink.canary_finished(record)
            records.append(record)
        return records

    def status(self, model: str) -> tuple[str | None, float | None]:
        """(the model's last result, the pass ratio of its last ``RECENT`` checks); (None, None) before any:
        the status page's canary input."""
        recent = self._recent.get(model)
        if not recent:
            return None, None
        return recent[-1].result, sum(r.result == "pass" for r in recent) / len(recent)

    async def _check(self, case: CanaryCase) -> CanaryRecord:
        started = self.clock()
        model = self.default_model(case)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races the answer.
            async with asyncio.timeout(self.timeout_s):
                answer = await self.send(case)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure to answer is the canary's "error" result
            reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"[:300]
            return self._record(case, model, "error", started, CheckResult(False, reason))
        model = answer.model or model
        if case.expect.language or case.expect.reference is not None:
            result = await asyncio.to_thread(check_answer, case, answer.text, self.identifier)
        else:
            result = check_answer(case, answer.text, self.identifier)
        return self._record(case, model, "pass" if result.passed else "fail", started, result)

    def _record(self, case: CanaryCase, model: str, outcome: str, started: float, result: CheckResult) -> CanaryRecord:
        record = CanaryRecord(
            model=model,
            case=case.name,
            result=outcome,
            duration_s=self.clock() - started,
            finished_at=self.wall(),
            chrf=result.chrf,
            reason=result.reason,
        )
        if outcome != "pass":
            log.warning(
                "canary check failed",
                extra={"model": model, "canary": case.name, "result": outcome, "reason": result.reason},
            )
        return record

    async def run(self) -> None:
        """Check, wait ``interval_s``, repeat, until cancelled. A failing round never stops the loop."""
        if not self.enabled:
            return
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in a sink or a check must not end the canary for good
                log.exception("canary round failed")
            await self.sleep(self.interval_s)

    def start(self) -> asyncio.Task[None] | None:
        """Start ``run`` as a task of the running loop (None when disabled)."""
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="gateway-canary")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
