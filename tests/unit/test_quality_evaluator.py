"""The evaluator: detectors combined per response, language identification sampled and off the event loop."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from gateway.quality import Flag, LanguageIdentifier, OutputSample, QualityConfig, QualityEvaluator, Segment

LANGS = ("en", "zh", "de", "fr", "es", "ja", "it", "pt", "ru", "ko")


@pytest.fixture(scope="module")
def identifier() -> LanguageIdentifier:
    ident = LanguageIdentifier(LANGS)
    ident.load()
    return ident


def translation(text: str, source: str, target: str, finish: str = "eos_token") -> OutputSample:
    return OutputSample("m", [Segment(text, (), finish, source)], "en", target)


def generation(text: str, ids: list[int], finish: str = "eos_token") -> OutputSample:
    return OutputSample("m", [Segment(text, ids, finish)])


def test_generation_flags() -> None:
    evaluator = QualityEvaluator()
    assert evaluator.evaluate(generation("A fine answer.", list(range(10)))).flags == set()
    looped = evaluator.evaluate(generation("TTTTTTTTTTTT", [55] * 12, "length"))
    assert looped.flags == {Flag.REPETITION, Flag.TRUNCATED}
    assert looped.score == pytest.approx(0.36)
    empty = evaluator.evaluate(generation("", [2]))
    assert empty.flags == {Flag.EMPTY} and empty.score == 0.0
    assert not empty.language_checked


def test_translation_flags(identifier: LanguageIdentifier) -> None:
    evaluator = QualityEvaluator(QualityConfig(langid_rate=1.0), identifier)
    source = "Where is the train station? I would like a cup of coffee."
    good = evaluator.evaluate(translation("Wo ist der Bahnhof? Ich hätte gern eine Tasse Kaffee.", source, "de"))
    assert good.flags == set() and good.score == 1.0 and good.language_checked
    assert good.length_ratios[0] == pytest.approx(1.0, abs=0.2)
    assert evaluator.evaluate(translation(source, source, "de")).flags == {Flag.COPY_THROUGH}
    assert evaluator.evaluate(translation("火车站在哪里？", source, "de")).flags == {Flag.SCRIPT_MISMATCH}
    spanish = "¿Dónde está la estación de tren? Quisiera una taza de café."
    assert evaluator.evaluate(translation(spanish, source, "de")).flags == {Flag.LANGUAGE_MISMATCH}
    assert evaluator.evaluate(translation("", source, "zh")).flags == {Flag.EMPTY}


def test_multi_segment_translation(identifier: LanguageIdentifier) -> None:
    evaluator = QualityEvaluator(QualityConfig(langid_rate=1.0), identifier)
    sample = OutputSample(
        "m",
        [Segment("早上好", (), "eos_token", "Good morning"), Segment("Good night", (), "eos_token", "Good night")],
        "en",
        "zh",
    )
    report = evaluator.evaluate(sample)
    assert report.flags == {Flag.COPY_THROUGH, Flag.SCRIPT_MISMATCH}
    assert report.score == pytest.approx((1.0 + 0.2 * 0.4) / 2)
    assert len(report.length_ratios) == 2


def test_language_identification_is_sampled(identifier: LanguageIdentifier) -> None:
    evaluator = QualityEvaluator(QualityConfig(langid_rate=0.25), identifier, rng=random.Random(7))
    sample = translation("Wo ist der Bahnhof? Ich hätte gern eine Tasse Kaffee.", "Where is the station?", "de")
    drawn = sum(evaluator.evaluate(sample).language_checked for _ in range(2000))
    assert 400 < drawn < 600
    assert not QualityEvaluator(QualityConfig(langid_rate=0.0), identifier).evaluate(sample).language_checked
    assert not QualityEvaluator(QualityConfig(langid_rate=1.0), None).evaluate(sample).language_checked
    assert not QualityEvaluator(QualityConfig(langid_rate=1.0), identifier).draw_language_check(
        generation("Wo ist der Bahnhof?", [1, 2])
    )


async def test_evaluate_async_runs_language_identification_off_the_loop(identifier: LanguageIdentifier) -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    class Recording(LanguageIdentifier):
        def mismatch(self, text: str, target_lang: str) -> bool:
            threads.append(threading.get_ident())
            return identifier.mismatch(text, target_lang)

    evaluator = QualityEvaluator(QualityConfig(langid_rate=1.0), Recording(LANGS))
    sample = translation("¿Dónde está la estación de tren? Quisiera una taza de café.", "Where is it?", "de")
    report = await evaluator.evaluate_async(sample)
    assert report.flags == {Flag.LANGUAGE_MISMATCH}
    assert threads and loop_thread not in threads
    # Without language identification the cheap detectors run inline.
    cheap = await QualityEvaluator(QualityConfig(langid_rate=0.0)).evaluate_async(sample)
    assert not cheap.language_checked and cheap.flags == set()
    assert asyncio.get_running_loop().is_running()
