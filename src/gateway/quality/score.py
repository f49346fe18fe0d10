"""The flags of one response, its score in [0, 1], and the rolling score per model.

Score of one response (docs/quality.md): the product, over the flags it raised, of ``1 - PENALTY[flag]``::

    score = prod(1 - PENALTY[f] for f in flags)        # 1.0 when no flag is raised

so ``empty`` alone gives 0, a loop that ran to the token budget (``repetition`` and ``truncated``) gives
0.4 * 0.9 = 0.36, and a plain truncation 0.9. A multi-segment translation scores the mean of its segments.

The rolling score of a model is the mean of its last ``window`` response scores (seed 000: 100 responses,
warning below 0.7). Quality only ever alerts: nothing here touches the circuit breaker or readiness.
"""

from __future__ import annotations

import enum
import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = ["PENALTY", "Flag", "QualityReport", "RollingScore", "RollingScores", "combine", "score_of"]


class Flag(enum.StrEnum):
    """The contract's ``flag`` label values of ``gateway_output_flags_total``."""

    EMPTY = "empty"
    REPETITION = "repetition"
    TRUNCATED = "truncated"
    COPY_THROUGH = "copy_through"
    SCRIPT_MISMATCH = "script_mismatch"
    LANGUAGE_MISMATCH = "language_mismatch"


# How much of the score a flag takes away (multiplicatively).
PENALTY: Final[dict[Flag, float]] = {
    Flag.EMPTY: 1.0,  # nothing to read: worthless
    Flag.COPY_THROUGH: 0.8,  # a "translation" that is its input
    Flag.REPETITION: 0.6,  # a loop: the start may still be usable
    Flag.SCRIPT_MISMATCH: 0.6,  # wrong writing system for the target language
    Flag.LANGUAGE_MISMATCH: 0.5,  # identified as another language (a statistical call)
    Flag.TRUNCATED: 0.1,  # often asked for (a small max_new_tokens); a weak signal alone
}


def score_of(flags: Iterable[Flag]) -> float:
    """The score of one output: the product of ``1 - PENALTY[flag]`` over its distinct flags."""
    return round(float(math.prod(1.0 - PENALTY[f] for f in set(flags))), 6)


@dataclass(frozen=True)
class QualityReport:
    """What the detectors found in one response (all its segments)."""

    flags: frozenset[Flag]
    score: float
    length_ratios: tuple[float, ...] = ()  # translation: output/input characters, one per segment
    language_checked: bool = False  # whether language identification ran (it is sampled)

    @property
    def flag_names(self) -> list[str]:
        """Sorted flag names, for the access log line."""
        return sorted(f.value for f in self.flags)


def combine(reports: Sequence[QualityReport]) -> QualityReport:
    """One report for a multi-segment response: the union of the flags, the mean score."""
    if len(reports) == 1:
        return reports[0]
    if not reports:
        return QualityReport(frozenset(), 1.0)
    return QualityReport(
        flags=frozenset().union(*(r.flags for r in reports)),
        score=sum(r.score for r in reports) / len(reports),
        length_ratios=tuple(x for r in reports for x in r.length_ratios),
        language_checked=any(r.language_checked for r in reports),
    )


@dataclass
class RollingScore:
    """Mean of the last ``window`` scores (a running sum, O(1) per score)."""

    window: int = 100
    _scores: deque[float] = field(default_factory=deque, repr=False)
    _total: float = 0.0

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be at least 1")

    def add(self, score: float) -> float:
        """Record one score; returns the new mean."""
        score = min(1.0, max(0.0, score))
        self._scores.append(score)
        self._total += score
        if len(self._scores) > self.window:
            self._total -= self._scores.popleft()
        return self.mean

    @property
    def mean(self) -> float:
        """The rolling mean; 1.0 before any score (nothing seen, nothing wrong)."""
        if not self._scores:
            return 1.0
        # The clamp hides the float drift of the running sum.
        return min(1.0, max(0.0, self._total / len(self._scores)))

    def __len__(self) -> int:
        return len(self._scores)


class RollingScores:
    """A ``RollingScore`` per model, safe to use from several threads; ``threshold`` is the warning line."""

    def __init__(self, window: int = 100, threshold: float = 0.7) -> None:
        self.window = window
        self.threshold = threshold
        self._lock = threading.Lock()
        self._by_model: dict[str, RollingScore] = {}

    def add(self, model: str, score: float) -> float:
        with self._lock:
            rolling = self._by_model.get(model)
            if rolling is None:
                rolling = self._by_model[model] = RollingScore(self.window)
            return rolling.add(score)

    def mean(self, model: str) -> float | None:
        """The model's rolling mean, or None before its first response."""
        with self._lock:
            rolling = self._by_model.get(model)
            return None if rolling is None or not len(rolling) else rolling.mean

    def below_threshold(self, model: str) -> bool:
        mean = self.mean(model)
        return mean is not None and mean < self.threshold

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {model: r.mean for model, r in self._by_model.items() if len(r)}
