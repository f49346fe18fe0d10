"""QualityMonitor: an answer in, its report out, the rolling score updated and a record sent; the canary cases
the settings select."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.quality import OutputSample, QualityMonitor, Segment, configured_canaries
from gateway.quality.demo_canaries import DEMO_CANARIES
from gateway.stats import QualityRecord


class ListSink:
    def __init__(self) -> None:
        self.records: list[QualityRecord] = []

    def output_evaluated(self, record: QualityRecord) -> None:
        self.records.append(record)


async def test_observe_reports_flags_score_and_rolling_score() -> None:
    sink = ListSink()
    monitor = QualityMonitor.build(sink, window=2, threshold=0.7, langid_rate=1.0, languages=["en", "de", "es"])
    await monitor.observe(OutputSample("gen", "/generate", [Segment("Fine.", [1, 2, 3], "eos_token")]))
    looped = await monitor.observe(OutputSample("gen", "/generate", [Segment("TTTTTTTTTT", [5] * 10, "length")]))
    assert looped.flag_names == ["repetition", "truncated"]
    spanish = "¿Dónde está la estación de tren? Quisiera una taza de café."
    translated = OutputSample("mt", "/translate", [Segment(spanish, (), "eos_token", "Where is it?")], "en", "de")
    report = monitor.observe_sync(translated)
    assert report.flag_names == ["language_mismatch"]
    first, second, third = sink.records
    assert (first.model, first.flags, first.score, first.rolling_score) == ("gen", (), 1.0, 1.0)
    assert second.flags == ("repetition", "truncated")
    assert second.rolling_score == pytest.approx((1.0 + 0.36) / 2)
    assert third.route == "/translate" and third.source_lang == "en" and third.target_lang == "de"
    assert third.rolling_score == 0.5 and len(third.length_ratios) == 1
    assert monitor.scores.below_threshold("gen") is True  # 0.68
    assert monitor.scores.below_threshold("mt") is True


def test_language_identification_off() -> None:
    monitor = QualityMonitor.build(ListSink(), langid_rate=0.0)
    assert monitor.evaluator.identifier is None
    monitor.load()  # nothing to load


def test_configured_canaries(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- {prompt: hi, expect: {contains: hello}}\n")
    (case,) = configured_canaries(path, uses_demo_models=True)
    assert case.expect.contains == ("hello",)
    assert configured_canaries(None, uses_demo_models=True) == DEMO_CANARIES
    assert configured_canaries(None, uses_demo_models=False) == ()
    path.write_text("- {prompt: hi}\n")
    with pytest.raises(ValueError, match="expect"):
        configured_canaries(path, uses_demo_models=False)
