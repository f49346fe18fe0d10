"""QualityMonitor: an answer in, its quality stats out (flags, score, the model's rolling score); the canary
cases the settings select."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.quality import OutputSample, QualityMonitor, Segment, configured_canaries
from gateway.quality.demo_canaries import DEMO_CANARIES


async def test_assess_gives_flags_score_and_rolling_score() -> None:
    monitor = QualityMonitor.build(window=2, threshold=0.7, langid_rate=1.0, languages=["en", "de", "es"])
    fine = await monitor.assess(OutputSample("gen", [Segment("Fine.", [1, 2, 3], "eos_token")]))
    assert (fine.flags, fine.score, fine.rolling_score) == ((), 1.0, 1.0)
    looped = await monitor.assess(OutputSample("gen", [Segment("TTTTTTTTTT", [5] * 10, "length")]))
    assert looped.flags == ("repetition", "truncated")
    assert looped.rolling_score == pytest.approx((1.0 + 0.36) / 2)
    spanish = "¿Dónde está la estación de tren? Quisiera una taza de café."
    segment = Segment(spanish, (), "eos_token", "Where is it?")
    translated = monitor.assess_sync(OutputSample("mt", [segment], "en", "de"))
    assert translated.flags == ("language_mismatch",)
    assert translated.rolling_score == 0.5 and len(translated.length_ratios) == 1
    assert monitor.scores.below_threshold("gen")  # 0.68
    assert monitor.scores.below_threshold("mt")
    # The window keeps the last two answers only.
    await monitor.assess(OutputSample("gen", [Segment("Fine.", [1, 2, 3], "eos_token")]))
    assert monitor.scores.mean("gen") == pytest.approx((0.36 + 1.0) / 2)


def test_language_identification_off() -> None:
    monitor = QualityMonitor.build(langid_rate=0.0)
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
