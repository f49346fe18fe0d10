"""A circuit breaker per model: closed -> open -> half-open -> closed (or open again).

- Opens after ``failure_threshold`` consecutive failures, or when the failure ratio over the last ``window``
  outcomes reaches ``failure_ratio`` (once ``min_calls`` outcomes are in the window), or at once on ``trip()``
  (an out-of-memory error at batch size 1).
- Stays open for ``recovery_s``, doubled on each consecutive trip up to ``max_recovery_s``; the half-open state
  is derived from the injected monotonic clock, never from a timer task.
- Half-open admits ``half_open_probes`` requests in all (a probe that ends unrecorded, such as bad input, gives
  its place back); they close it when all succeed, and any failure opens it again for longer.
- Only outcomes reported through a ``Permit`` count; cancellations and bad input release the permit unrecorded.
- Transitions are published through ``on_transition(old, new)``.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable

from gateway.errors import BreakerOpen


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class Permit:
    """One admitted request; report exactly one of success/failure/release."""

    __slots__ = ("_breaker", "_probe", "_settled")

    def __init__(self, breaker: CircuitBreaker, probe: bool) -> None:
        self._breaker = breaker
        self._probe = probe
        self._settled = False

    def success(self) -> None:
        if not self._settled:
            self._settled = True
            self._breaker._on_success(self._probe)

    def failure(self) -> None:
        if not self._settled:
            self._settled = True
            self._breaker._on_failure(self._probe)

    def release(self) -> None:
        if not self._settled:
            self._settled = True
            self._breaker._on_release(self._probe)


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        failure_ratio: float = 0.5,
        window: int = 20,
        min_calls: int = 10,
        recovery_s: float = 30.0,
        max_recovery_s: float = 300.0,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.failure_ratio = failure_ratio
        # More than ``window`` outcomes can never be in the window: the ratio would never open the breaker.
        self.min_calls = min(min_calls, window)
        self.recovery_s = recovery_s
        self.max_recovery_s = max_recovery_s
        self.half_open_probes = half_open_probes
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._trips = 0
        self._open_until = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() >= self._open_until:
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    @property
    def current_recovery_s(self) -> float:
        """The open period the next (or current) trip uses."""
        return min(self.recovery_s * 2.0 ** max(self._trips - 1, 0), self.max_recovery_s)

    def retry_after(self) -> float:
        if self.state is BreakerState.OPEN:
            return max(self._open_until - float(self._clock()), 0.0)
        return 1.0

    def acquire(self) -> Permit:
        """Admit a request or raise ``BreakerOpen`` (with ``retry_after``)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(self, probe=False)
        if state is BreakerState.HALF_OPEN and self._probes_in_flight + self._probe_successes < self.half_open_probes:
            self._probes_in_flight += 1
            return Permit(self, probe=True)
        raise BreakerOpen(retry_after=max(self.retry_after(), 1.0))

    def trip(self) -> None:
        """Open at once (a failure that must not be retried, such as OOM at batch size 1)."""
        if self.state is not BreakerState.OPEN:
            self._open()

    def _on_success(self, probe: bool) -> None:
        self._consecutive = 0
        if probe:
            self._probes_in_flight -= 1
            if self._state is BreakerState.HALF_OPEN:
                self._probe_successes += 1
                if self._probe_successes >= self.half_open_probes:
                    self._close()
            return
        if self._state is BreakerState.CLOSED:
            self._outcomes.append(True)

    def _on_failure(self, probe: bool) -> None:
        if probe:
            self._probes_in_flight -= 1
            if self._state is BreakerState.HALF_OPEN:
                self._open()
            return
        if self._state is not BreakerState.CLOSED:
            return
        self._consecutive += 1
        self._outcomes.append(False)
        failures = self._outcomes.count(False)
        ratio_hit = len(self._outcomes) >= self.min_calls and failures / len(self._outcomes) >= self.failure_ratio
        if self._consecutive >= self.failure_threshold or ratio_hit:
            self._open()

    def _on_release(self, probe: bool) -> None:
        if probe:
            self._probes_in_flight -= 1

    def _open(self) -> None:
        self._trips += 1
        self._open_until = self._clock() + self.current_recovery_s
        self._probe_successes = 0
        self._transition(BreakerState.OPEN)

    def _close(self) -> None:
        self._trips = 0
        self._consecutive = 0
        self._outcomes.clear()
        self._probe_successes = 0
        self._transition(BreakerState.CLOSED)

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_transition is not None:
            self._on_transition(old, new)
