"""The health score: one number 0-100 and a level per model and overall, from what the gateway measures.

Each component maps one measurement to a sub-score in [0, 1] by a straight line between its ``good`` value
(1) and its ``bad`` value (0), clamped at both ends. The score is 100 x the weighted mean of the sub-scores of
the components that are present: a component whose input is ``None`` (no requests in the window, no GPU, no
quality score or canary configured) is left out and its weight is shared among the others in proportion. The
score is computed afresh from the current window each time, so it falls and recovers with what it measures
(unlike a formula that starts at 100 and only subtracts).

Level: ``healthy`` at 80 and above, ``warning`` from 50, ``critical`` below 50. Some states are critical whatever
the weighted mean says (a mean dilutes them): an open breaker, no live worker, or an error ratio of 25% or more.
They cap the score at 49. The overall score and level are those of the worst model.

``COMPONENTS`` is the table docs/health.md reproduces (a test keeps the two in step). ``RequestWindow`` keeps the
last ``window_s`` seconds of finished requests per model (a ``StatsSink``) and gives the error ratio, the p95s and
the throughput the score reads. Nothing here imports FastAPI or prometheus_client.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from gateway.stats import NullSink, RequestRecord

__all__ = [
    "COMPONENTS",
    "CRITICAL_BELOW",
    "HEALTHY_FROM",
    "Component",
    "Health",
    "HealthInputs",
    "Level",
    "RequestWindow",
    "WindowStats",
    "overall_health",
    "score_model",
]

HEALTHY_FROM: Final = 80.0
CRITICAL_BELOW: Final = 50.0
CRITICAL_CAP: Final = 49.0


class Level(enum.IntEnum):
    """The gauge ``gateway_health_level``: 0 healthy, 1 warning, 2 critical."""

    HEALTHY = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Component:
    """One input of the score: sub-score 1 at ``good``, 0 at ``bad`` (either may be the larger), linear between.
    ``critical_at``: from this value on (towards ``bad``) the level is critical whatever the mean."""

    name: str
    weight: float
    good: float
    bad: float
    critical_at: float | None = None
    what: str = ""

    def sub_score(self, value: float) -> float:
        position = (value - self.good) / (self.bad - self.good)
        return min(1.0, max(0.0, 1.0 - position))

    def is_critical(self, value: float) -> bool:
        if self.critical_at is None:
            return False
        return value >= self.critical_at if self.bad > self.good else value <= self.critical_at


# fmt: off
COMPONENTS: Final[tuple[Component, ...]] = (
    Component("error_ratio", 30, good=0.01, bad=0.10, critical_at=0.25,
              what="server_error + timeout over finished requests in the window (none finished: absent)"),
    Component("latency", 15, good=1.0, bad=3.0,
              what="worst of p95 TTFT / TTFT target and p95 time per token / its target (the SLO targets)"),
    Component("queue", 15, good=0.5, bad=0.95, what="queue depth / queue capacity"),
    Component("breaker", 15, good=0, bad=2, critical_at=2, what="0 closed, 1 half-open, 2 open"),
    Component("workers", 10, good=1.0, bad=0.0, critical_at=0.0, what="live workers / expected workers"),
    Component("gpu_memory", 5, good=0.85, bad=0.98, what="GPU memory used / total, the fullest GPU (no GPU: absent)"),
    Component("quality", 5, good=0.9, bad=0.5, what="rolling output quality score in [0, 1] (not configured: absent)"),
    Component("canary", 5, good=1.0, bad=0.0, what="share of recent canary checks passed (canary off: absent)"),
)
# fmt: on
_BY_NAME: Final = {c.name: c for c in COMPONENTS}


@dataclass(frozen=True)
class HealthInputs:
    """What one model's score reads; ``None`` means the component is absent."""

    breaker_state: int
    workers_alive: int
    workers_expected: int = 1
    queue_depth: int = 0
    queue_capacity: int = 1
    error_ratio: float | None = None
    ttft_p95_s: float | None = None
    time_per_token_p95_s: float | None = None
    ttft_target_s: float = 2.0
    time_per_token_target_s: float = 0.1
    gpu_memory_used_ratio: float | None = None
    quality_score: float | None = None
    canary_pass_ratio: float | None = None

    def values(self) -> dict[str, float | None]:
        """Component name -> measured value (None: absent)."""
        latencies = [
            p95 / target
            for p95, target in (
                (self.ttft_p95_s, self.ttft_target_s),
                (self.time_per_token_p95_s, self.time_per_token_target_s),
            )
            if p95 is not None and target > 0
        ]
        return {
            "error_ratio": self.error_ratio,
            "latency": max(latencies) if latencies else None,
            "queue": self.queue_depth / self.queue_capacity if self.queue_capacity > 0 else None,
            "breaker": float(self.breaker_state),
            "workers": self.workers_alive / self.workers_expected if self.workers_expected > 0 else 0.0,
            "gpu_memory": self.gpu_memory_used_ratio,
            "quality": self.quality_score,
            "canary": self.canary_pass_ratio,
        }


@dataclass(frozen=True)
class Health:
    score: float
    level: Level
    components: Mapping[str, float | None] = field(default_factory=dict)  # sub-scores; None: absent
    reasons: tuple[str, ...] = ()  # the components that forced critical


def level_for(score: float) -> Level:
    if score >= HEALTHY_FROM:
        return Level.HEALTHY
    if score >= CRITICAL_BELOW:
        return Level.WARNING
    return Level.CRITICAL


def score_model(inputs: HealthInputs) -> Health:
    """The score and level of one model (see the module docstring for the rules)."""
    subs: dict[str, float | None] = {}
    reasons = []
    total = weights = 0.0
    for name, value in inputs.values().items():
        component = _BY_NAME[name]
        if value is None or math.isnan(value):
            subs[name] = None
            continue
        sub = component.sub_score(value)
        subs[name] = sub
        total += component.weight * sub
        weights += component.weight
        if component.is_critical(value):
            reasons.append(name)
    score = 100.0 * total / weights if weights else 0.0
    if reasons:
        score = min(score, CRITICAL_CAP)
    score = round(score, 1)
    return Health(score, level_for(score), subs, tuple(reasons))


def overall_health(models: Iterable[Health]) -> Health:
    """The worst model's score and level (a gateway is as healthy as its sickest model); no model: critical."""
    worst = min(models, key=lambda h: h.score, default=None)
    if worst is None:
        return Health(0.0, Level.CRITICAL, {}, ("no_models",))
    return Health(worst.score, worst.level, {}, worst.reasons)


# --- the sliding window ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowStats:
    """One model's finished requests over the window."""

    requests: int
    errors: int
    error_ratio: float | None
    throughput_rps: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    ttft_p95_s: float | None
    time_per_token_p95_s: float | None
    errors_by_type: Mapping[str, int]


@dataclass(frozen=True)
class _Event:
    at: float
    error: bool
    latency_s: float
    ttft_s: float | None
    time_per_token_s: float | None
    error_type: str | None


def _p(values: list[float], q: float) -> float | None:
    """The q-quantile by nearest rank (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


ERROR_STATUSES: Final = frozenset({"server_error", "timeout"})
COUNTED_STATUSES: Final = frozenset({"success", "server_error", "timeout"})


class RequestWindow(NullSink):
    """A ``StatsSink`` keeping the last ``window_s`` seconds of finished requests per model, on ``clock`` (the
    other records it is handed, it drops, as ``NullSink`` does).

    Counted: successes, server errors and timeouts (the error ratio's denominator, as the alerts count it);
    client errors, rejections and cancellations are not the model failing and are left out of the ratio and the
    latencies, but are still counted by type. At most ``max_events`` are kept per model (the oldest go first).
    """

    def __init__(
        self, window_s: float = 300.0, *, clock: Callable[[], float] = time.monotonic, max_events: int = 10_000
    ) -> None:
        self.window_s = window_s
        self._clock = clock
        self._max_events = max_events
        self._events: dict[str, deque[_Event]] = {}
        self._lock = threading.Lock()

    def request_finished(self, record: RequestRecord) -> None:
        if not record.model:
            return
        tpot = None
        if record.generated_tokens > 1 and record.inference_s:
            tpot = record.inference_s / record.generated_tokens
        event = _Event(
            self._clock(),
            record.status in ERROR_STATUSES,
            record.latency_s if record.status in COUNTED_STATUSES else math.nan,
            record.first_token_s if record.status == "success" else None,
            tpot if record.status == "success" else None,
            record.error_type,
        )
        with self._lock:
            events = self._events.setdefault(record.model, deque(maxlen=self._max_events))
            events.append(event)

    def stats(self, model: str) -> WindowStats:
        now = self._clock()
        with self._lock:
            events = self._events.get(model, deque())
            while events and events[0].at < now - self.window_s:
                events.popleft()
            current = list(events)
        counted = [e for e in current if not math.isnan(e.latency_s)]
        errors = sum(e.error for e in counted)
        by_type: dict[str, int] = {}
        for e in current:
            if e.error_type:
                by_type[e.error_type] = by_type.get(e.error_type, 0) + 1
        latencies = [e.latency_s for e in counted]
        return WindowStats(
            requests=len(counted),
            errors=errors,
            error_ratio=errors / len(counted) if counted else None,
            throughput_rps=(len(counted) - errors) / self.window_s,
            latency_p50_s=_p(latencies, 0.50),
            latency_p95_s=_p(latencies, 0.95),
            ttft_p95_s=_p([e.ttft_s for e in current if e.ttft_s is not None], 0.95),
            time_per_token_p95_s=_p([e.time_per_token_s for e in current if e.time_per_token_s is not None], 0.95),
            errors_by_type=by_type,
        )
