"""Unit tests of ``gateway.breaker.CircuitBreaker`` with an injected clock (no sleeps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.breaker import BreakerState, CircuitBreaker, Permit
from gateway.errors import BreakerOpen
from tests.clock import ManualClock

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)


@pytest.fixture
def transitions() -> list[tuple[BreakerState, BreakerState]]:
    return []


@pytest.fixture
def make_breaker(
    clock: ManualClock, transitions: list[tuple[BreakerState, BreakerState]]
) -> Callable[..., CircuitBreaker]:
    def build(**overrides: Any) -> CircuitBreaker:
        values: dict[str, Any] = {
            "failure_threshold": 3,
            "failure_ratio": 0.5,
            "window": 10,
            "min_calls": 10,
            "recovery_s": 30.0,
            "max_recovery_s": 100.0,
            "half_open_probes": 1,
        }
        values.update(overrides)
        return CircuitBreaker(clock=clock, on_transition=lambda old, new: transitions.append((old, new)), **values)

    return build


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.acquire().failure()


def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.acquire().success()


def trip_and_recover(breaker: CircuitBreaker, clock: ManualClock) -> None:
    """Open the breaker (from closed or half-open) and move the clock to the end of its open period."""
    if breaker.state is CLOSED:
        fail(breaker, breaker.failure_threshold)
    else:
        fail(breaker)
    assert breaker.state is OPEN
    clock.advance(breaker.retry_after())
    assert breaker.state is HALF_OPEN


def test_starts_closed_and_admits(make_breaker: Callable[..., CircuitBreaker]) -> None:
    breaker = make_breaker()
    assert breaker.state is CLOSED
    succeed(breaker, 50)
    assert breaker.state is CLOSED


def test_opens_after_consecutive_failures(make_breaker: Callable[..., CircuitBreaker], transitions: list[Any]) -> None:
    breaker = make_breaker(failure_threshold=3)
    fail(breaker, 2)
    assert breaker.state is CLOSED
    fail(breaker)
    assert breaker.state is OPEN
    assert transitions == [(CLOSED, OPEN)]


def test_a_success_resets_the_consecutive_count(make_breaker: Callable[..., CircuitBreaker]) -> None:
    breaker = make_breaker(failure_threshold=3, min_calls=100, window=100)
    for _ in range(5):
        fail(breaker, 2)
        succeed(breaker)
    assert breaker.state is CLOSED


def test_opens_on_failure_ratio_over_the_window(make_breaker: Callable[..., CircuitBreaker]) -> None:
    breaker = make_breaker(failure_threshold=100, failure_ratio=0.5, window=4, min_calls=4)
    succeed(breaker)
    fail(breaker)
    succeed(breaker)
    assert breaker.state is CLOSED  # 1/3: too few calls to judge
    fail(breaker)
    assert breaker.state is OPEN  # 2/4


def test_ratio_window_slides(make_breaker: Callable[..., CircuitBreaker]) -> None:
    breaker = make_breaker(failure_threshold=100, failure_ratio=0.5, window=4, min_calls=4)
    fail(breaker)
    succeed(breaker, 4)  # the failure slid out of the window
    fail(breaker)
    assert breaker.state is CLOSED  # 1/4
    fail(breaker)
    assert breaker.state is OPEN  # 2/4


def test_ratio_needs_min_calls(make_breaker: Callable[..., CircuitBreaker]) -> None:
    breaker = make_breaker(failure_threshold=100, failure_ratio=0.5, window=10, min_calls=6)
    for _ in range(2):
        fail(breaker)
        succeed(breaker)
    assert breaker.state is CLOSED  # 2/4 but only 4 calls
    succeed(breaker)
    fail(breaker)
    assert breaker.state is OPEN  # 3/6


def test_min_calls_larger_than_the_window_still_lets_the_ratio_open(
    make_breaker: Callable[..., CircuitBreaker],
) -> None:
    breaker = make_breaker(failure_threshold=100, failure_ratio=0.5, window=4, min_calls=10)
    for _ in range(2):
        succeed(breaker)
        fail(breaker)
    assert breaker.state is OPEN


def test_open_rejects_with_retry_after(make_breaker: Callable[..., CircuitBreaker], clock: ManualClock) -> None:
    breaker = make_breaker(recovery_s=30.0)
    fail(breaker, 3)
    clock.advance(10.0)
    with pytest.raises(BreakerOpen) as raised:
        breaker.acquire()
    assert raised.value.retry_after == pytest.approx(20.0)
    assert raised.value.status_code == 503
    assert raised.value.error_type == "circuit_open"


def test_half_opens_after_recovery_time(
    make_breaker: Callable[..., CircuitBreaker], clock: ManualClock, transitions: list[Any]
) -> None:
    breaker = make_breaker(recovery_s=30.0)
    fail(breaker, 3)
    clock.advance(29.9)
    assert breaker.state is OPEN
    clock.advance(0.1)
    assert breaker.state is HALF_OPEN
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_successful_probe_closes(
    make_breaker: Callable[..., CircuitBreaker], clock: ManualClock, transitions: list[Any]
) -> None:
    breaker = make_breaker()
    trip_and_recover(breaker, clock)
    succeed(breaker)
    assert breaker.state is CLOSED
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    # Closed again with a clean slate: it takes the full threshold to open.
    fail(breaker, 2)
    assert breaker.state is CLOSED


def test_failed_probe_reopens(
    make_breaker: Callable[..., CircuitBreaker], clock: ManualClock, transitions: list[Any]
) -> None:
    breaker = make_breaker()
    trip_and_recover(breaker, clock)
    fail(breaker)
    assert breaker.state is OPEN
    assert transitions[-1] == (HALF_OPEN, OPEN)


def test_half_open_admits_only_the_configured_probes(
    make_breaker: Callable[..., CircuitBreaker], clock: ManualClock
) -> None:
    breaker = make_breaker(half_open_probes=2)
    trip_and_recover(breaker, clock)
    first, second = breaker.acquire(), breaker.acquire()
    with pytest.raises(BreakerOpen) as raised:
        breaker.acquire()
    assert raised.value.retry_after is not None and raised.value.retry_after >= 1.0
    first.success()
    assert breaker.state is HALF_OPEN  # one of two probes succeeded
    with pytest.raises(BreakerOpen):
        breaker.acquire()  # both probes were admitted: no third one
    second.success()
    assert breaker.state is CLOSED


def test_any_failed_probe_reopens_when_several(make_breaker: Callable[..., CircuitBreaker], clock: ManualClock) -> None:
    breaker = make_breaker(half_open_probes=3)
    trip_and_recover(breaker, clock)
    permits = [breaker.acquire() for _ in range(3)]
    permits[0].success()
    permits[1].failure()
    assert breaker.state is OPEN
    permits[2].success()  # a late probe of the failed round does not close it
    assert breaker.state is OPEN


def test_released_probe_gives_its_place_back(make_breaker: Callable[..., CircuitBreaker], clock: ManualClock) -> None:
    breaker = make_breaker()
    trip_and_recover(breaker, clock)
    probe = breaker.acquire()
    with pytest.raises(BreakerOpen):
        breaker.acquire()
    probe.release()  # bad input or cancelled: says nothing about the model
    assert breaker.state is HALF_OPEN
    succeed(breaker)
    assert breaker.state is CLOSED


def test_recovery_time_doubles_on_repeated_trips_up_to_the_cap(
    make_breaker: Callable[..., CircuitBreaker], clock: ManualClock
) -> None:
    breaker = make_breaker(recovery_s=30.0, max_recovery_s=100.0)
    open_periods = []
    for _ in range(4):
        if breaker.state is CLOSED:
            fail(breaker, 3)
        else:
            fail(breaker)  # a failed probe
        assert breaker.state is OPEN
        period = breaker.retry_after()
        open_periods.append(period)
        clock.advance(period - 0.01)
        assert breaker.state is OPEN
        clock.advance(0.01)
        assert breaker.state is HALF_OPEN
    assert open_periods == [pytest.approx(p) for p in (30.0, 60.0, 100.0, 100.0)]


def test_recovery_time_resets_after_closing(make_breaker: Callable[..., CircuitBreaker], clock: ManualClock) -> None:
    breaker = make_breaker(recovery_s=30.0)
    trip_and_recover(breaker, clock)
    fail(breaker)
    assert breaker.retry_after() == pytest.approx(60.0)
    clock.advance(60.0)
    succeed(breaker)
    assert breaker.state is CLOSED
    fail(breaker, 3)
    assert breaker.retry_after() == pytest.approx(30.0)


def test_trip_opens_at_once(make_breaker: Callable[..., CircuitBreaker], transitions: list[Any]) -> None:
    breaker = make_breaker(failure_threshold=100)
    permit = breaker.acquire()
    breaker.trip()
    permit.failure()  # the request that caused it reports too, without a second trip
    assert breaker.state is OPEN
    assert breaker.retry_after() == pytest.approx(30.0)
    assert transitions == [(CLOSED, OPEN)]


def test_trip_while_half_open_reopens_for_longer(
    make_breaker: Callable[..., CircuitBreaker], clock: ManualClock
) -> None:
    breaker = make_breaker()
    trip_and_recover(breaker, clock)
    probe = breaker.acquire()
    breaker.trip()
    probe.failure()
    assert breaker.state is OPEN
    assert breaker.retry_after() == pytest.approx(60.0)


def test_released_permits_are_never_counted(make_breaker: Callable[..., CircuitBreaker]) -> None:
    breaker = make_breaker(failure_threshold=1, window=2, min_calls=1)
    for _ in range(20):
        breaker.acquire().release()
    assert breaker.state is CLOSED


def test_a_permit_reports_once(make_breaker: Callable[..., CircuitBreaker]) -> None:
    breaker = make_breaker(failure_threshold=2)
    permit = breaker.acquire()
    permit.failure()
    permit.failure()
    permit.success()
    assert breaker.state is CLOSED
    fail(breaker)
    assert breaker.state is OPEN


def test_outcomes_of_requests_admitted_before_opening_are_ignored(
    make_breaker: Callable[..., CircuitBreaker], clock: ManualClock
) -> None:
    breaker = make_breaker()
    early: list[Permit] = [breaker.acquire() for _ in range(3)]
    fail(breaker, 3)
    assert breaker.state is OPEN
    early[0].success()  # finished while open: does not close it
    assert breaker.state is OPEN
    clock.advance(30.0)
    assert breaker.state is HALF_OPEN
    early[1].success()  # not a probe: does not close it
    early[2].failure()  # not a probe: does not reopen it
    assert breaker.state is HALF_OPEN
    succeed(breaker)
    assert breaker.state is CLOSED


def test_state_labels() -> None:
    assert [s.label for s in BreakerState] == ["closed", "half_open", "open"]
    assert [int(s) for s in BreakerState] == [0, 1, 2]  # the gauge's values
