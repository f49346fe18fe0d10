"""The per-response score formula, multi-segment combination and the rolling score."""

from __future__ import annotations

import threading

import pytest

from gateway.quality.score import PENALTY, Flag, QualityReport, RollingScore, RollingScores, combine, score_of


def test_score_formula() -> None:
    assert score_of([]) == 1.0
    assert score_of([Flag.EMPTY]) == 0.0
    assert score_of([Flag.TRUNCATED]) == pytest.approx(0.9)
    assert score_of([Flag.REPETITION, Flag.TRUNCATED]) == pytest.approx(0.4 * 0.9)
    assert score_of([Flag.SCRIPT_MISMATCH, Flag.COPY_THROUGH]) == pytest.approx(0.4 * 0.2)
    assert score_of([Flag.TRUNCATED, Flag.TRUNCATED]) == score_of([Flag.TRUNCATED])  # a flag counts once
    assert set(PENALTY) == set(Flag)
    assert all(0 <= score_of([f]) < 1 for f in Flag)


def test_combine_segments() -> None:
    good = QualityReport(frozenset(), 1.0, (1.1,))
    looped = QualityReport(frozenset({Flag.REPETITION}), 0.4, (3.0,), language_checked=True)
    both = combine([good, looped])
    assert both.flags == {Flag.REPETITION}
    assert both.score == pytest.approx(0.7)
    assert both.length_ratios == (1.1, 3.0)
    assert both.language_checked
    assert combine([good]) is good
    assert combine([]).score == 1.0


def test_rolling_score_is_the_mean_of_the_last_window() -> None:
    rolling = RollingScore(window=4)
    assert rolling.mean == 1.0 and len(rolling) == 0
    assert rolling.add(0.0) == 0.0
    assert rolling.add(1.0) == 0.5
    for _ in range(4):
        rolling.add(1.0)
    assert rolling.mean == 1.0  # the 0.0 left the window
    for _ in range(2):
        rolling.add(0.0)
    assert rolling.mean == 0.5
    assert len(rolling) == 4
    assert rolling.add(7.0) == pytest.approx(0.5)  # clamped to 1.0: (1 + 0 + 0 + 1) / 4


def test_rolling_score_rejects_an_empty_window() -> None:
    with pytest.raises(ValueError):
        RollingScore(window=0)


def test_rolling_scores_per_model_and_threshold() -> None:
    scores = RollingScores(window=100, threshold=0.7)
    assert scores.mean("a") is None and not scores.below_threshold("a")
    for _ in range(100):
        scores.add("a", 0.9)
        scores.add("b", 0.9)
    for _ in range(40):
        scores.add("b", 0.0)
    assert scores.mean("a") == pytest.approx(0.9)
    assert scores.mean("b") == pytest.approx(0.9 * 0.6)
    assert not scores.below_threshold("a")
    assert scores.below_threshold("b")
    assert scores.snapshot() == {"a": pytest.approx(0.9), "b": pytest.approx(0.54)}


def test_rolling_scores_from_threads() -> None:
    scores = RollingScores(window=1000)

    def add() -> None:
        for i in range(500):
            scores.add("m", i % 2)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert scores.mean("m") == pytest.approx(0.5)
