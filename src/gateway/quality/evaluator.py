"""Evaluates one finished response: runs the detectors, decides whether language identification runs (sampled),
and scores it.

The cheap detectors (empty, truncated, repetition, length ratio, copy-through, script) cost microseconds and may
run on the event loop; language identification costs tens of microseconds of CPU per segment and loads a model,
so ``evaluate_async`` runs a response that drew it on a worker thread. The caller decides nothing else::

    evaluator = QualityEvaluator(QualityConfig(langid_rate=0.2), LanguageIdentifier(languages))
    report = await evaluator.evaluate_async(sample)      # or evaluator.evaluate(sample) from a thread

For a translation, ``sample.segments`` holds (input, output) per segment; for generation, the output only.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from gateway.quality.detectors import (
    RepetitionConfig,
    copy_through,
    is_empty,
    is_truncated,
    length_ratio,
    repetition,
    script_mismatch,
)
from gateway.quality.langid import LanguageIdentifier
from gateway.quality.score import Flag, QualityReport, combine, score_of

__all__ = ["OutputSample", "QualityConfig", "QualityEvaluator", "Segment"]


@dataclass(frozen=True)
class Segment:
    """One generated text: its token ids, finish reason and, for a translation, its input."""

    text: str
    token_ids: Sequence[int] = ()
    finish_reason: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class OutputSample:
    """One finished response. ``target_lang`` set means a translation (its segments carry their ``source``)."""

    model: str
    segments: Sequence[Segment]
    source_lang: str | None = None
    target_lang: str | None = None

    @property
    def is_translation(self) -> bool:
        return self.target_lang is not None


@dataclass(frozen=True)
class QualityConfig:
    """``langid_rate``: the fraction of translation responses whose language is identified (0 to 1)."""

    langid_rate: float = 0.2
    repetition: RepetitionConfig = field(default_factory=RepetitionConfig)
    copy_min_similarity: float = 0.9


class QualityEvaluator:
    """Stateless apart from its sampling RNG; safe to call from several threads."""

    def __init__(
        self,
        config: QualityConfig | None = None,
        identifier: LanguageIdentifier | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or QualityConfig()
        self.identifier = identifier
        self._rng = rng or random.Random()

    def draw_language_check(self, sample: OutputSample) -> bool:
        """Whether this response gets language identification (a translation, drawn at ``langid_rate``)."""
        rate = self.config.langid_rate
        if self.identifier is None or not sample.is_translation or rate <= 0:
            return False
        return rate >= 1 or self._rng.random() < rate

    def evaluate(self, sample: OutputSample, *, identify_language: bool | None = None) -> QualityReport:
        """The report of one response. Blocking when language identification runs (``identify_language``, or
        drawn when None): call that from a worker thread."""
        if identify_language is None:
            identify_language = self.draw_language_check(sample)
        reports = [self._segment(sample, s, identify_language) for s in sample.segments]
        return combine(reports)

    async def evaluate_async(self, sample: OutputSample, executor: Executor | None = None) -> QualityReport:
        """``evaluate`` from the event loop: inline when only the cheap detectors run, else on a worker thread."""
        identify = self.draw_language_check(sample)
        if not identify:
            return self.evaluate(sample, identify_language=False)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, lambda: self.evaluate(sample, identify_language=True))

    def _segment(self, sample: OutputSample, segment: Segment, identify_language: bool) -> QualityReport:
        flags: set[Flag] = set()
        text = segment.text
        if is_empty(text):
            flags.add(Flag.EMPTY)
        if is_truncated(segment.finish_reason):
            flags.add(Flag.TRUNCATED)
        if repetition(segment.token_ids, self.config.repetition) is not None:
            flags.add(Flag.REPETITION)
        ratios: tuple[float, ...] = ()
        checked = False
        target = sample.target_lang
        if target is not None and segment.source is not None:
            ratio = length_ratio(segment.source, text)
            ratios = () if ratio is None else (ratio,)
            if Flag.EMPTY not in flags:
                copied = copy_through(segment.source, text, min_similarity=self.config.copy_min_similarity)
                if copied:
                    flags.add(Flag.COPY_THROUGH)
                if script_mismatch(text, target):
                    flags.add(Flag.SCRIPT_MISMATCH)
                elif identify_language and self.identifier is not None and not copied:
                    # A text in the wrong script or copied from the input is already flagged for it.
                    checked = True
                    if self.identifier.mismatch(text, target):
                        flags.add(Flag.LANGUAGE_MISMATCH)
        return QualityReport(frozenset(flags), score_of(flags), ratios, checked)
