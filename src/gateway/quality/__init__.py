"""Output quality: detectors over finished responses, a score per response, a rolling score per model, and the
synthetic canary. Domain code: no HTTP, no Prometheus; results travel as ``gateway.stats`` records."""

from gateway.quality.detectors import RepetitionConfig
from gateway.quality.evaluator import OutputSample, QualityConfig, QualityEvaluator, Segment
from gateway.quality.langid import LanguageIdentifier
from gateway.quality.monitor import QualityMonitor, configured_canaries
from gateway.quality.score import PENALTY, Flag, QualityReport, RollingScore, RollingScores, combine, score_of

__all__ = [
    "PENALTY",
    "Flag",
    "LanguageIdentifier",
    "OutputSample",
    "QualityConfig",
    "QualityEvaluator",
    "QualityMonitor",
    "QualityReport",
    "RepetitionConfig",
    "RollingScore",
    "RollingScores",
    "Segment",
    "combine",
    "configured_canaries",
    "score_of",
]
