"""FanOut: one sink for the HTTP layer and the engine that hands every record to the recorder and the window."""

from __future__ import annotations

from gateway.health import RequestWindow
from gateway.stats import BatchRecord, FanOut, RequestRecord, StatsSink


class Log:
    """A sink that keeps what it was told, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def request_finished(self, record: RequestRecord) -> None:
        self.calls.append(("request", record.request_id))

    def batch_finished(self, record: BatchRecord) -> None:
        self.calls.append(("batch", record.size))

    def breaker_transition(self, model: str, to_state: str) -> None:
        self.calls.append(("breaker", to_state))

    def worker_replaced(self, model: str) -> None:
        self.calls.append(("worker", model))


def test_every_sink_gets_every_record_in_order() -> None:
    first, second = Log(), Log()
    window = RequestWindow(60.0, clock=lambda: 0.0)
    sink: StatsSink = FanOut(first, window, second)
    sink.request_finished(RequestRecord(request_id="a", route="/generate", model="m", latency_s=0.1))
    sink.batch_finished(BatchRecord(model="m", size=3, inference_s=0.1, ok=True))
    sink.breaker_transition("m", "open")
    sink.worker_replaced("m")
    expected = [("request", "a"), ("batch", 3), ("breaker", "open"), ("worker", "m")]
    assert first.calls == second.calls == expected
    assert window.stats("m").requests == 1
