"""The one manual clock of the tests: time moves when the test says so, never by sleeping.

``ManualClock()`` runs with ``time.monotonic`` plus whatever the test advanced: for the real app, where some
waits (the watchdog, the batch window) still pass in real time beside the injected clock. ``ManualClock(start)``
stands still at ``start`` until advanced: for unit tests, where nothing may move unless the test moves it.
"""

from __future__ import annotations

import time


class ManualClock:
    """A monotonic clock the test moves by hand (deadlines, the breaker's recovery, retry intervals)."""

    def __init__(self, start: float | None = None) -> None:
        self._start = start
        self.offset = 0.0

    def _base(self) -> float:
        return time.monotonic() if self._start is None else self._start

    def __call__(self) -> float:
        return self._base() + self.offset

    @property
    def now(self) -> float:
        return self()

    @now.setter
    def now(self, value: float) -> None:
        self.offset = value - self._base()

    def advance(self, seconds: float) -> None:
        self.offset += seconds
