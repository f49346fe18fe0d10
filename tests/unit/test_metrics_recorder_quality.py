"""Quality and canary records into Prometheus: the contract's names, types and label sets, bounded labels."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.stats import CanaryRecord, QualityRecord
from metrics import Instruments, PrometheusRecorder

MODEL = "gpt2"
LANGUAGES = ("en", "zh", "de")
ROUTES = ("/generate", "/generate_stream", "/", "/translate")

# CONTRACT.md's "More metrics" rows for quality, copied by hand: name -> (type, labels without ``le``).
CONTRACT = {
    "gateway_output_flags": ("counter", {"model", "route", "flag"}),
    "gateway_output_quality_score": ("gauge", {"model"}),
    "gateway_translation_length_ratio": ("histogram", {"source_lang", "target_lang"}),
    "gateway_canary_checks": ("counter", {"model", "result"}),
    "gateway_canary_duration_seconds": ("histogram", {"model"}),
    "gateway_canary_last_success_timestamp_seconds": ("gauge", {"model"}),
}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def recorder(registry: CollectorRegistry) -> PrometheusRecorder:
    return PrometheusRecorder(Instruments(registry), models=[MODEL], routes=ROUTES, languages=LANGUAGES)


def families(registry: CollectorRegistry) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def quality(**overrides: object) -> QualityRecord:
    fields: dict[str, object] = {
        "model": MODEL,
        "route": "/generate",
        "flags": ("repetition", "truncated"),
        "score": 0.36,
        "rolling_score": 0.8,
    }
    fields.update(overrides)
    return QualityRecord(**fields)  # type: ignore[arg-type]


def canary(**overrides: object) -> CanaryRecord:
    fields: dict[str, object] = {
        "model": MODEL,
        "case": "c",
        "result": "pass",
        "duration_s": 0.2,
        "finished_at": 1_700_000_000.0,
    }
    fields.update(overrides)
    return CanaryRecord(**fields)  # type: ignore[arg-type]


def test_contract_names_types_and_labels(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    recorder.output_evaluated(quality(route="/translate", source_lang="en", target_lang="zh", length_ratios=(0.3,)))
    recorder.canary_finished(canary(chrf=61.0))
    found = families(registry)
    for name, (typ, labels) in CONTRACT.items():
        family = found[name]
        assert family.type == typ, name  # type: ignore[attr-defined]
        for sample in family.samples:  # type: ignore[attr-defined]
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    exposed = generate_latest(registry).decode()
    assert "gateway_output_flags_total{" in exposed and "gateway_canary_checks_total{" in exposed


def test_output_evaluated(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    recorder.output_evaluated(quality())
    recorder.output_evaluated(quality(flags=("truncated",), score=0.9, rolling_score=0.62))
    flags = "gateway_output_flags_total"
    assert value(registry, flags, model=MODEL, route="/generate", flag="repetition") == 1
    assert value(registry, flags, model=MODEL, route="/generate", flag="truncated") == 2
    assert value(registry, "gateway_output_evaluations_total", model=MODEL, route="/generate") == 2
    assert value(registry, "gateway_output_quality_score", model=MODEL) == pytest.approx(0.62)
    assert value(registry, "gateway_translation_length_ratio_count", source_lang="en", target_lang="zh") is None


def test_translation_length_ratio_per_segment(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    recorder.output_evaluated(
        quality(route="/translate", flags=(), source_lang="en", target_lang="zh-Hant", length_ratios=(0.28, 0.4))
    )
    labels = {"source_lang": "en", "target_lang": "zh"}
    assert value(registry, "gateway_translation_length_ratio_count", **labels) == 2
    assert value(registry, "gateway_translation_length_ratio_sum", **labels) == pytest.approx(0.68)
    assert value(registry, "gateway_translation_length_ratio_bucket", le="0.3", **labels) == 1


def test_labels_are_bounded(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    recorder.output_evaluated(
        quality(model="some/other", route="/secret", flags=("made_up",), source_lang="xx", length_ratios=(1.0,))
    )
    recorder.canary_finished(canary(model="nope", result="weird"))
    assert value(registry, "gateway_output_flags_total", model="other", route="other", flag="other") == 1
    assert value(registry, "gateway_translation_length_ratio_count", source_lang="other", target_lang="other") == 1
    assert value(registry, "gateway_canary_checks_total", model="other", result="other") == 1


def test_canary_finished(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    recorder.canary_finished(canary(finished_at=1000.0, chrf=55.5))
    recorder.canary_finished(canary(result="fail", finished_at=2000.0, duration_s=0.4))
    recorder.canary_finished(canary(result="error", finished_at=3000.0, duration_s=60.0))
    for result in ("pass", "fail", "error"):
        assert value(registry, "gateway_canary_checks_total", model=MODEL, result=result) == 1
    # The last success stays at the passing check's time.
    assert value(registry, "gateway_canary_last_success_timestamp_seconds", model=MODEL) == 1000.0
    assert value(registry, "gateway_canary_duration_seconds_count", model=MODEL) == 3
    assert value(registry, "gateway_canary_chrf_score", model=MODEL) == 55.5


def test_a_request_record_with_quality_is_counted(registry: CollectorRegistry, recorder: PrometheusRecorder) -> None:
    from gateway.stats import QualityStats, RequestRecord

    plain = RequestRecord(request_id="a", route="/translate", model=MODEL, source_lang="en", target_lang="de")
    recorder.request_finished(plain)  # not evaluated: no quality series
    assert value(registry, "gateway_output_evaluations_total", route="/translate", model=MODEL) is None
    assessed = RequestRecord(request_id="b", route="/translate", model=MODEL, source_lang="en", target_lang="de")
    assessed.quality = QualityStats(("empty",), 0.0, 0.5, (0.0,))
    recorder.request_finished(assessed)
    assert value(registry, "gateway_output_evaluations_total", route="/translate", model=MODEL) == 1
    assert value(registry, "gateway_output_flags_total", route="/translate", model=MODEL, flag="empty") == 1
    assert value(registry, "gateway_output_quality_score", model=MODEL) == 0.5
    assert value(registry, "gateway_translation_length_ratio_count", source_lang="en", target_lang="de") == 1
