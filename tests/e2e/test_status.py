"""The status document from plain inputs, and active alerts read from a real Alertmanager on loopback."""

from __future__ import annotations

import json
import urllib.request

import pytest

from gateway.alerts import ActiveAlert, AlertsUnavailable, fetch_active_alerts, parse_alerts
from gateway.health import Level, RequestWindow, overall_health
from gateway.stats import GaugeSnapshot, RequestRecord
from gateway.status import ModelStatus, build_status, model_health
from tests.conftest import free_port


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def _record(status: str, error_type: str | None = None) -> RequestRecord:
    return RequestRecord(
        request_id="r",
        route="/generate",
        model="gen",
        status=status,
        error_type=error_type,
        latency_s=0.25,
        first_token_s=0.05,
        inference_s=0.2,
        generated_tokens=10,
    )


def sample_status(*, breaker: int = 0, errors: int = 0, alerts: list[ActiveAlert] | None = None) -> dict[str, object]:
    window = RequestWindow(60.0, clock=Clock())
    for _ in range(20):
        window.request_finished(_record("success"))
    for _ in range(errors):
        window.request_finished(_record("server_error", "out_of_memory"))
    gauges = GaugeSnapshot("gen", queue_depth=3, queue_capacity=64, in_flight=5, breaker_state=breaker, workers_alive=1)
    stats = window.stats("gen")
    health = model_health(gauges, stats, gpu_memory_used_ratio=0.5)
    models = [
        ModelStatus("gen", "text-generation", "cuda:0", "ready", gauges, stats, health, None, None, 4e9, 8e9),
    ]
    return build_status(
        version="1.2.3",
        uptime_s=3725.0,
        window_s=60.0,
        overall=overall_health([health]),
        models=models,
        alerts=alerts,
        now=0.0,
    )


def test_status_document() -> None:
    status = sample_status()
    assert status["overall"] == {"score": 100.0, "level": "healthy", "reasons": []}
    (model,) = status["models"]  # type: ignore[misc]
    assert model["breaker"] == "closed" and model["queue"] == {"depth": 3, "capacity": 64}
    assert model["in_flight"] == 5 and model["requests"] == 20
    assert model["throughput_rps"] == round(20 / 60, 3)
    assert model["latency_p95_s"] == 0.25 and model["time_to_first_token_p95_s"] == 0.05
    assert model["time_per_output_token_p95_s"] == 0.02
    assert model["quality_score"] is None and model["canary"] is None
    assert model["gpu_memory"] == {"used_bytes": 4e9, "total_bytes": 8e9}
    assert status["alerts"] == {"configured": False, "error": None, "active": []}
    assert status["generated_at"] == "1970-01-01T00:00:00+00:00"
    json.dumps(status)  # plain JSON


def test_faults_move_the_document() -> None:
    status = sample_status(breaker=2, errors=20)
    assert status["overall"]["level"] == "critical"  # type: ignore[index]
    (model,) = status["models"]  # type: ignore[misc]
    assert model["breaker"] == "open" and model["error_ratio"] == 0.5
    assert model["errors_by_type"] == {"out_of_memory": 20}
    assert set(model["health"]["reasons"]) == {"breaker", "error_ratio"}
    assert Level.CRITICAL.label == model["health"]["level"]


def test_parse_alerts_keeps_the_active_critical_first() -> None:
    payload = [
        {"labels": {"alertname": "B", "severity": "warning"}, "annotations": {"summary": "b"}, "startsAt": "2"},
        {"labels": {"alertname": "S", "severity": "critical"}, "status": {"state": "suppressed"}},
        {"labels": {"alertname": "A", "severity": "critical", "model": "m"}, "annotations": {}, "startsAt": "3"},
        "junk",
    ]
    assert [(a.name, a.model) for a in parse_alerts(payload)] == [("A", "m"), ("B", None)]
    with pytest.raises(AlertsUnavailable):
        parse_alerts({"not": "a list"})


def test_active_alerts_from_a_real_alertmanager(alertmanager: str) -> None:
    assert fetch_active_alerts(alertmanager) == []
    alert = {
        "labels": {"alertname": "GatewayCircuitBreakerOpen", "severity": "critical", "model": "gen"},
        "annotations": {"summary": "Circuit breaker open for model gen"},
    }
    request = urllib.request.Request(
        alertmanager + "/api/v2/alerts",
        data=json.dumps([alert]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=5).close()
    (active,) = fetch_active_alerts(alertmanager)
    assert active.name == "GatewayCircuitBreakerOpen" and active.model == "gen"
    assert active.summary == "Circuit breaker open for model gen" and active.severity == "critical"


def test_unreachable_alertmanager_is_reported_not_raised_as_a_crash() -> None:
    with pytest.raises(AlertsUnavailable, match="unreachable"):
        fetch_active_alerts(f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
