"""The health score: each level boundary, the critical states, absent components, the window moving both ways,
and docs/health.md's table against the module's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.health import (
    COMPONENTS,
    Health,
    HealthInputs,
    Level,
    RequestWindow,
    overall_health,
    score_model,
)
from gateway.stats import RequestRecord

DOC = Path(__file__).resolve().parents[2] / "docs" / "health.md"


def inputs(**overrides: object) -> HealthInputs:
    values: dict[str, object] = {"breaker_state": 0, "workers_alive": 1, "queue_depth": 0, "queue_capacity": 100}
    values.update(overrides)
    return HealthInputs(**values)  # type: ignore[arg-type]


def error_ratio_for(sub_score: float) -> float:
    (component,) = [c for c in COMPONENTS if c.name == "error_ratio"]
    return component.good + (1 - sub_score) * (component.bad - component.good)


def test_all_good_is_100_healthy() -> None:
    health = score_model(inputs(error_ratio=0.0, ttft_p95_s=0.5, time_per_token_p95_s=0.02))
    assert (health.score, health.level) == (100.0, Level.HEALTHY)
    assert health.components["gpu_memory"] is None and health.components["quality"] is None


# Present: error ratio (30), queue (15), breaker (15), workers (10): score = 100 (30 s + 40) / 70.
@pytest.mark.parametrize(
    ("sub_score", "score", "level"),
    [
        (16 / 30, 80.0, Level.HEALTHY),  # exactly at the healthy boundary
        ((79.9 * 0.7 - 40) / 30, 79.9, Level.WARNING),  # just under it
    ],
)
def test_healthy_warning_boundary(sub_score: float, score: float, level: Level) -> None:
    health = score_model(inputs(error_ratio=error_ratio_for(sub_score)))
    assert (health.score, health.level) == (score, level)


# Queue full (0) and breaker half-open (0.5): score = 100 (30 s + 17.5) / 70.
@pytest.mark.parametrize(
    ("sub_score", "score", "level"),
    [
        (17.5 / 30, 50.0, Level.WARNING),  # exactly at the critical boundary: still a warning
        ((49.9 * 0.7 - 17.5) / 30, 49.9, Level.CRITICAL),
    ],
)
def test_warning_critical_boundary(sub_score: float, score: float, level: Level) -> None:
    health = score_model(inputs(error_ratio=error_ratio_for(sub_score), queue_depth=95, breaker_state=1))
    assert (health.score, health.level) == (score, level)
    assert health.reasons == ()


def test_doc_examples() -> None:
    assert score_model(inputs(error_ratio=0.052)).score == 80.0
    assert score_model(inputs(error_ratio=0.0, queue_depth=95, breaker_state=1)).score == 67.9


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"breaker_state": 2}, "breaker"),
        ({"workers_alive": 0}, "workers"),
        ({"error_ratio": 0.25}, "error_ratio"),
    ],
)
def test_critical_states_cap_the_score(overrides: dict[str, object], reason: str) -> None:
    health = score_model(inputs(**{"error_ratio": 0.0, **overrides}))
    assert (health.score, health.level, health.reasons) == (49.0, Level.CRITICAL, (reason,))


def test_just_under_a_critical_state_is_not_critical() -> None:
    health = score_model(inputs(error_ratio=0.2499))
    assert health.reasons == () and health.level is Level.WARNING  # 100 (0 + 40) / 70 = 57.1
    assert health.score == 57.1


def test_absent_components_share_their_weight() -> None:
    base = score_model(inputs(error_ratio=0.0, queue_depth=95))  # (30 + 0 + 15 + 10) / 70
    assert base.score == 78.6
    # quality and canary perfect: present, and they raise the mean
    with_quality = score_model(inputs(error_ratio=0.0, queue_depth=95, quality_score=1.0, canary_pass_ratio=1.0))
    assert with_quality.score == 81.2  # 100 (55 + 10) / 80 = 81.25
    # a failing canary and poor quality lower it
    bad_quality = score_model(inputs(error_ratio=0.0, queue_depth=95, quality_score=0.5, canary_pass_ratio=0.0))
    assert bad_quality.score == 68.8 and bad_quality.level is Level.WARNING
    # a GPU at 98% scores 0; at 85% or less, 1
    assert score_model(inputs(error_ratio=0.0, gpu_memory_used_ratio=0.98)).score == 93.3
    assert score_model(inputs(error_ratio=0.0, gpu_memory_used_ratio=0.5)).score == 100.0


def test_latency_against_the_slo_targets() -> None:
    at_target = score_model(inputs(error_ratio=0.0, ttft_p95_s=2.0, time_per_token_p95_s=0.05))
    assert at_target.components["latency"] == 1.0
    slow = score_model(inputs(error_ratio=0.0, ttft_p95_s=1.0, time_per_token_p95_s=0.2))  # 2x its target
    assert slow.components["latency"] == 0.5


def test_overall_is_the_worst_model() -> None:
    good = score_model(inputs(error_ratio=0.0))
    bad = score_model(inputs(breaker_state=2))
    assert overall_health([good, bad]) == Health(bad.score, Level.CRITICAL, {}, ("breaker",))
    assert overall_health([]).level is Level.CRITICAL


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(status: str = "success", **fields: object) -> RequestRecord:
    values: dict[str, object] = {"request_id": "r", "route": "/generate", "model": "m", "status": status}
    values.update(latency_s=0.2, first_token_s=0.1, inference_s=0.1, generated_tokens=10)
    if status != "success":
        values["error_type"] = {"server_error": "model_error", "rejected": "queue_full"}.get(status, status)
    values.update(fields)
    return RequestRecord(**values)  # type: ignore[arg-type]


def test_the_window_moves_the_score_down_and_back_up() -> None:
    clock = Clock()
    window = RequestWindow(60.0, clock=clock)

    def score() -> Health:
        stats = window.stats("m")
        return score_model(inputs(error_ratio=stats.error_ratio, ttft_p95_s=stats.ttft_p95_s))

    for _ in range(20):
        window.request_finished(record())
    assert score().level is Level.HEALTHY
    clock.now += 30
    for _ in range(20):
        window.request_finished(record("server_error"))
    window.request_finished(record("rejected"))  # not in the ratio, but counted by type
    stats = window.stats("m")
    assert (stats.requests, stats.errors, stats.error_ratio) == (40, 20, 0.5)
    assert stats.errors_by_type == {"model_error": 20, "queue_full": 1}
    assert score().level is Level.CRITICAL
    clock.now += 31  # the successes left the window: only errors now
    assert window.stats("m").error_ratio == 1.0
    clock.now += 30  # the errors left too, and new successes come in
    for _ in range(5):
        window.request_finished(record())
    recovered = score()
    assert recovered.level is Level.HEALTHY and recovered.score == 100.0
    assert window.stats("m").errors_by_type == {}


def test_window_percentiles_and_throughput() -> None:
    clock = Clock()
    window = RequestWindow(10.0, clock=clock)
    for i in range(1, 101):
        window.request_finished(record(latency_s=i / 100, first_token_s=i / 1000, inference_s=1.0, generated_tokens=4))
    window.request_finished(record("client_error", latency_s=99.0))  # not a latency of the model
    stats = window.stats("m")
    assert stats.latency_p50_s == 0.5 and stats.latency_p95_s == 0.95
    assert stats.ttft_p95_s == 0.095 and stats.time_per_token_p95_s == 0.25
    assert stats.throughput_rps == 10.0
    assert window.stats("unknown").requests == 0 and window.stats("unknown").error_ratio is None


def test_the_doc_table_is_the_module_table() -> None:
    rows = [line for line in DOC.read_text().splitlines() if re.match(r"\| [a-z_]+ \| \d+ \| [\d.]+ \|", line)]
    parsed = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    assert [row[0] for row in parsed] == [c.name for c in COMPONENTS]
    for row, component in zip(parsed, COMPONENTS, strict=True):
        name, weight, good, bad, critical, what = row
        assert float(weight) == component.weight, name
        assert (float(good), float(bad)) == (component.good, component.bad), name
        assert (float(critical) if critical else None) == component.critical_at, name
        assert what == component.what, name
    assert sum(c.weight for c in COMPONENTS) == 100
