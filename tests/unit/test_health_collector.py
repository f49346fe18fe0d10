"""The health gauges export what the score function gives, afresh at every scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrics import HealthCollector


def test_health_collector_exports_what_it_reads() -> None:
    values = {"m": (72.5, 1), "overall": (72.5, 1)}
    registry = CollectorRegistry()
    registry.register(HealthCollector(lambda: values))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert {s.labels["model"]: s.value for s in families["gateway_health_score"].samples} == {
        "m": 72.5,
        "overall": 72.5,
    }
    values["m"] = (30.0, 2)  # read afresh at every scrape
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert {s.labels["model"]: s.value for s in families["gateway_health_level"].samples}["m"] == 2


def test_a_failing_score_leaves_the_page_up() -> None:
    def broken() -> dict[str, tuple[float, int]]:
        raise RuntimeError("bug")

    registry = CollectorRegistry()
    registry.register(HealthCollector(broken))
    assert "gateway_health" not in generate_latest(registry).decode()
