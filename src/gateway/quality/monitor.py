"""The gateway's one entry point into output quality: evaluate a finished answer, update the model's rolling
score, report it, and build the canary from the settings.

The facade calls, once per finished answer (never for canary answers, which are checked by the canary)::

    report = await monitor.observe(sample)          # flags and score; language ID off the event loop
    record.quality_flags, record.quality_score = tuple(report.flag_names), report.score

and ``observe`` sends a ``QualityRecord`` (with the new rolling score) to the sink. Nothing here touches the
circuit breaker or readiness.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from gateway.quality.canary import CanaryCase, load_canaries
from gateway.quality.evaluator import OutputSample, QualityConfig, QualityEvaluator
from gateway.quality.langid import LanguageIdentifier
from gateway.quality.score import QualityReport, RollingScores
from gateway.stats import QualityRecord

__all__ = ["QualityMonitor", "QualitySink", "configured_canaries"]

log = logging.getLogger("gateway.quality")


class QualitySink(Protocol):
    def output_evaluated(self, record: QualityRecord) -> None: ...


class QualityMonitor:
    """An evaluator, the rolling scores of every model, and where their records go."""

    def __init__(self, evaluator: QualityEvaluator, scores: RollingScores, sink: QualitySink) -> None:
        self.evaluator = evaluator
        self.scores = scores
        self.sink = sink

    @classmethod
    def build(
        cls,
        sink: QualitySink,
        *,
        window: int = 100,
        threshold: float = 0.7,
        langid_rate: float = 0.2,
        languages: Iterable[str] | None = None,
    ) -> QualityMonitor:
        """From the settings' values (``quality_window``, ``quality_threshold``, ``quality_langid_rate``);
        ``languages``: the translation model's (identification is restricted to them)."""
        identifier = LanguageIdentifier(languages) if langid_rate > 0 else None
        evaluator = QualityEvaluator(QualityConfig(langid_rate=langid_rate), identifier)
        return cls(evaluator, RollingScores(window, threshold), sink)

    def load(self) -> None:
        """Load the language-identification model now (blocking, under a second): from a thread at startup, so
        that the first sampled answer does not pay for it."""
        if self.evaluator.identifier is not None:
            self.evaluator.identifier.load()

    async def observe(self, sample: OutputSample) -> QualityReport:
        report = await self.evaluator.evaluate_async(sample)
        self.record(sample, report)
        return report

    def observe_sync(self, sample: OutputSample) -> QualityReport:
        """``observe`` for a caller already off the event loop (it may block on language identification)."""
        report = self.evaluator.evaluate(sample)
        self.record(sample, report)
        return report

    def record(self, sample: OutputSample, report: QualityReport) -> None:
        rolling = self.scores.add(sample.model, report.score)
        self.sink.output_evaluated(
            QualityRecord(
                model=sample.model,
                route=sample.route,
                flags=tuple(report.flag_names),
                score=report.score,
                rolling_score=rolling,
                source_lang=sample.source_lang,
                target_lang=sample.target_lang,
                length_ratios=report.length_ratios,
            )
        )


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
