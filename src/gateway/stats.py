"""Stats that travel one way, as plain dataclasses, from the gateway to whatever records them (the Prometheus
recorder in ``metrics.recorder``). Domain code only knows the ``StatsSink`` protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class RequestRecord:
    """One finished HTTP request; filled in as the request goes and emitted once at its end."""

    request_id: str
    route: str
    model: str = ""
    status_code: int = 0
    status: str = "success"
    latency_s: float = 0.0
    queue_s: float | None = None
    inference_s: float | None = None
    first_token_s: float | None = None
    prompt_tokens: int = 0
    generated_tokens: int = 0
    batch_size: int | None = None
    finish_reason: str | None = None
    source_lang: str | None = None
    target_lang: str | None = None
    error_type: str | None = None
    error: str | None = None
    streamed: bool = False
    payload: dict[str, object] = field(default_factory=dict)
    # Output quality of the answer (gateway.quality), for the access log line; None when not evaluated.
    quality_flags: tuple[str, ...] | None = None
    quality_score: float | None = None
    # A canary request: counted in the canary's own series, kept out of the request metrics.
    synthetic: bool = False


@dataclass(frozen=True)
class BatchRecord:
    """One ``generate`` call of a worker."""

    model: str
    size: int
    inference_s: float
    ok: bool


@dataclass(frozen=True)
class QualityRecord:
    """The quality of one finished response (``gateway.quality``): its flags, its score and the model's rolling
    score after it. ``length_ratios``: one per translated segment."""

    model: str
    route: str
    flags: tuple[str, ...]
    score: float
    rolling_score: float
    source_lang: str | None = None
    target_lang: str | None = None
    length_ratios: tuple[float, ...] = ()


@dataclass(frozen=True)
class CanaryRecord:
    """One canary check: ``result`` is ``pass``, ``fail`` (answered, but not as expected) or ``error`` (no
    answer); ``finished_at`` is wall-clock time (for the last-success gauge); ``chrf`` when a reference was
    given. ``case`` names the case for logs only, never a label."""

    model: str
    case: str
    result: str
    duration_s: float
    finished_at: float
    chrf: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class GaugeSnapshot:
    """Values read at scrape time for one model."""

    model: str
    queue_depth: int
    queue_capacity: int
    in_flight: int
    breaker_state: int
    workers_alive: int


class StatsSink(Protocol):
    def request_finished(self, record: RequestRecord) -> None: ...

    def batch_finished(self, record: BatchRecord) -> None: ...

    def breaker_transition(self, model: str, to_state: str) -> None: ...

    def worker_replaced(self, model: str) -> None: ...

    def output_evaluated(self, record: QualityRecord) -> None: ...

    def canary_finished(self, record: CanaryRecord) -> None: ...


class NullSink:
    """A sink that drops everything (for unit tests of domain code)."""

    def request_finished(self, record: RequestRecord) -> None:
        pass

    def batch_finished(self, record: BatchRecord) -> None:
        pass

    def breaker_transition(self, model: str, to_state: str) -> None:
        pass

    def worker_replaced(self, model: str) -> None:
        pass

    def output_evaluated(self, record: QualityRecord) -> None:
        pass

    def canary_finished(self, record: CanaryRecord) -> None:
        pass
