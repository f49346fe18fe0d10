"""Stats that travel one way, as plain dataclasses.

- ``RequestStats``: what the serving path measured for one request, returned with its outputs by the service
  and the facade (never filled in from outside);
- ``RequestRecord``: the HTTP layer's access-log record of one request; it copies the ``RequestStats`` in
  (``add``), and hands the finished record to the ``StatsSink``;
- ``BatchRecord``, ``GaugeSnapshot``: one runner submission, and the values read at scrape time.

The sink (the Prometheus recorder in ``metrics.recorder``, beside the health score's window, joined by
``FanOut``) is passed in at construction; domain code only knows the ``StatsSink`` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class RequestStats:
    """What serving one request measured: tokens, time in the queue and in the model, the batch it ran in.

    ``batch_size`` is the most rows decoded together while this request's rows ran (the running batch), which is
    what the access log's ``batch_size`` field reports; ``gateway_batch_size`` observes runner submissions.
    """

    model: str
    prompt_tokens: int = 0
    generated_tokens: int = 0
    queue_s: float | None = None
    inference_s: float | None = None
    first_token_s: float | None = None
    batch_size: int | None = None
    finish_reason: str | None = None
    quality: QualityStats | None = None  # when the answer's quality was evaluated (gateway.quality)


@dataclass(frozen=True)
class QualityStats:
    """The quality of one request's answer: its flags and score, the model's rolling score after it, and for a
    translation the output/input length ratio of each segment."""

    flags: tuple[str, ...]
    score: float
    rolling_score: float
    length_ratios: tuple[float, ...] = ()


@dataclass
class RequestRecord:
    """One finished HTTP request: created by the access-log middleware, completed by the route from the
    ``RequestStats`` it got back, emitted once at the end."""

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
    key: str | None = None  # the name of the API key that authenticated it (never the key)
    payload: dict[str, object] = field(default_factory=dict)
    quality: QualityStats | None = None

    def add(self, stats: RequestStats) -> None:
        """Copy what the serving path measured into this record."""
        self.model = stats.model
        self.prompt_tokens = stats.prompt_tokens
        self.generated_tokens = stats.generated_tokens
        self.queue_s = stats.queue_s
        self.inference_s = stats.inference_s
        self.first_token_s = stats.first_token_s
        self.batch_size = stats.batch_size
        self.finish_reason = stats.finish_reason
        if stats.quality is not None:
            self.quality = stats.quality


@dataclass(frozen=True)
class BatchRecord:
    """One runner submission (a group of rows that joined the batch together): ``gateway_batch_size``."""

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

    def canary_finished(self, record: CanaryRecord) -> None:
        pass


class FanOut:
    """One sink that hands everything to several (the Prometheus recorder and the health score's window), in
    order. The HTTP layer and the engine each take one sink; this lets both consumers see every record."""

    def __init__(self, *sinks: StatsSink) -> None:
        self.sinks = sinks

    def request_finished(self, record: RequestRecord) -> None:
        for sink in self.sinks:
            sink.request_finished(record)

    def batch_finished(self, record: BatchRecord) -> None:
        for sink in self.sinks:
            sink.batch_finished(record)

    def breaker_transition(self, model: str, to_state: str) -> None:
        for sink in self.sinks:
            sink.breaker_transition(model, to_state)

    def worker_replaced(self, model: str) -> None:
        for sink in self.sinks:
            sink.worker_replaced(model)

    def canary_finished(self, record: CanaryRecord) -> None:
        for sink in self.sinks:
            sink.canary_finished(record)
