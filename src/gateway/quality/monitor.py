"""The gateway's one entry point into output quality: evaluate a finished answer and update the model's rolling
score; and the canary cases the settings select.

The facade calls, once per finished answer (never for canary answers, which the canary checks itself)::

    stats.quality = await monitor.assess(sample)      # flags, score, rolling score; language ID off the loop

and the ``QualityStats`` travel with the request's stats to the access log and the metrics recorder. Nothing
here touches the circuit breaker or readiness.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from gateway.quality.canary import CanaryCase, load_canaries
from gateway.quality.evaluator import OutputSample, QualityConfig, QualityEvaluator
from gateway.quality.langid import LanguageIdentifier
from gateway.quality.score import QualityReport, RollingScores
from gateway.stats import QualityStats

__all__ = ["QualityMonitor", "configured_canaries"]

log = logging.getLogger("gateway.quality")


class QualityMonitor:
    """An evaluator and the rolling scores of every model."""

    def __init__(self, evaluator: QualityEvaluator, scores: RollingScores) -> None:
        self.evaluator = evaluator
        self.scores = scores

    @classmethod
    def build(
        cls,
        *,
        window: int = 100,
        threshold: float = 0.7,
        langid_rate: float = 0.2,
        languages: Iterable[str] | None = None,
    ) -> QualityMonitor:
        """From the settings' values (``quality_window``, ``quality_threshold``, ``quality_langid_rate``);
        ``languages``: the ones identification chooses among (None: every language py3langid knows)."""
        identifier = LanguageIdentifier(languages) if langid_rate > 0 else None
        evaluator = QualityEvaluator(QualityConfig(langid_rate=langid_rate), identifier)
        return cls(evaluator, RollingScores(window, threshold))

    def load(self) -> None:
        """Load the language-identification model now (blocking, under a second): from a thread at startup, so
        that the first sampled answer does not pay for it."""
        if self.evaluator.identifier is not None:
            self.evaluator.identifier.load()

    async def assess(self, sample: OutputSample) -> QualityStats:
        """Evaluate one answer (language identification on a worker thread when drawn) and record its score."""
        return self.stats(sample, await self.evaluator.evaluate_async(sample))

    def assess_sync(self, sample: OutputSample) -> QualityStats:
        """``assess`` for a caller already off the event loop (it may block on language identification)."""
        return self.stats(sample, self.evaluator.evaluate(sample))

    def stats(self, sample: OutputSample, report: QualityReport) -> QualityStats:
        rolling = self.scores.add(sample.model, report.score)
        return QualityStats(tuple(report.flag_names), report.score, rolling, report.length_ratios)


def configured_canaries(canary_file: Path | None, *, uses_demo_models: bool) -> Sequence[CanaryCase]:
    """The canary cases to run: the file's, else the demo models' built-in ones, else none (with a warning).
    A broken file raises ``ValueError`` naming what is wrong: refuse to start rather than run no canary."""
    if canary_file is not None:
        return load_canaries(canary_file)
    if uses_demo_models:
        from gateway.quality.demo_canaries import DEMO_CANARIES

        return DEMO_CANARIES
    log.warning("canary enabled without GATEWAY_CANARY_FILE: no cases to run for these models")
    return ()
