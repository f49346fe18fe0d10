"""Fault injection for rehearsals and tests: makes the real runner fail the next N batches (or a fraction).

Kinds: ``oom`` and ``error`` raise inside the runner, ``stall`` holds the batch, and ``degrade`` lets the batch
run but makes its rows degenerate (``output``: ``repeat``, every token after the first is the first one again;
``empty``, the first token is end-of-sequence): answers that succeed and are garbage, which only the quality
signals see. The breaker and readiness never notice a degraded batch, by design.

Off unless ``GATEWAY_ENABLE_FAULTS=true``. A runner ``take``s the fault of each submission when it is handed
over, and ``apply``s it inside its own error handling when the submission is admitted, so an injected fault
travels the same path as a real one.

One plan at a time: ``set()`` replaces the plan. A stall in progress ends early when the plan is replaced or
cleared (``DELETE /admin/faults``, or shutdown), so an injected stall never holds a thread, or the process's
exit, for its whole length once nobody wants it; the stalled batch then runs as usual.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

FAULT_KINDS = ("oom", "error", "stall", "degrade")
DEGRADE_OUTPUTS = ("repeat", "empty")


@dataclass(frozen=True)
class FaultPlan:
    kind: str
    count: int | None = None
    ratio: float | None = None
    seconds: float = 30.0
    output: str = "repeat"  # degrade only: "repeat" or "empty"

    @property
    def degrade(self) -> str | None:
        """The degenerate output this plan asks for, or None when it is not a ``degrade`` plan."""
        return self.output if self.kind == "degrade" else None


class FaultInjector:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._lock = threading.Lock()
        self._plan: FaultPlan | None = None
        self._remaining = 0
        self._rng = rng or random.Random()
        # Set (and replaced by a fresh one) whenever the plan changes: wakes the stalls taken from the old plan.
        self._wake = threading.Event()
        self.injected = 0
        self.on_change: list[Callable[[], None]] = []  # told after the plan is replaced or cleared

    def set(self, plan: FaultPlan) -> None:
        with self._lock:
            self._plan = plan
            self._remaining = plan.count if plan.count is not None else 0
            self._wake_stalls()

    def clear(self) -> None:
        with self._lock:
            self._plan = None
            self._remaining = 0
            self._wake_stalls()

    def _wake_stalls(self) -> None:
        self._wake.set()
        self._wake = threading.Event()
        for listener in self.on_change:
            listener()

    def describe(self) -> dict[str, object] | None:
        with self._lock:
            if self._plan is None:
                return None
            described: dict[str, object] = {
                "kind": self._plan.kind,
                "remaining": self._remaining if self._plan.count is not None else None,
                "ratio": self._plan.ratio,
                "seconds": self._plan.seconds,
                "injected": self.injected,
            }
            if self._plan.degrade is not None:
                described["output"] = self._plan.degrade
            return described

    def take(self) -> FaultPlan | None:
        """The fault the next submission meets, if any (counted as injected)."""
        with self._lock:
            plan = self._plan
            if plan is None:
                return None
            if plan.count is not None:
                if self._remaining <= 0:
                    self._plan = None
                    return None
                self._remaining -= 1
                if self._remaining == 0:
                    self._plan = None
            elif plan.ratio is None or self._rng.random() >= plan.ratio:
                return None
            self.injected += 1
            return plan

    def apply(self, plan: FaultPlan, oom_error: type[BaseException]) -> None:
        """Raise or stall as ``plan`` says; ``oom_error`` is the runtime's own out-of-memory exception class.

        A stall ends early when this injector's plan next changes. ``degrade`` does nothing here: the decode
        loop reads ``plan.degrade`` when it chooses tokens.
        """
        if plan.kind == "oom":
            raise oom_error("CUDA out of memory. (injected fault)")
        if plan.kind == "error":
            raise RuntimeError("injected model error")
        if plan.kind == "stall":
            self._wake.wait(plan.seconds)
