"""Language identification with py3langid on short hand-made sentences in the demo translation languages."""

from __future__ import annotations

import pytest

from gateway.quality.langid import LanguageIdentifier

DEMO_LANGUAGES = ("en", "zh", "de", "fr", "es", "ja", "it", "pt", "ru", "ko")

SENTENCES = {
    "en": "Where is the train station? I would like a cup of coffee.",
    "zh": "火车站在哪里？我想要一杯咖啡。",
    "de": "Wo ist der Bahnhof? Ich hätte gern eine Tasse Kaffee.",
    "fr": "Où est la gare ? Je voudrais une tasse de café.",
    "es": "¿Dónde está la estación de tren? Quisiera una taza de café.",
    "ja": "駅はどこですか？コーヒーを一杯ください。",
    "it": "Dov'è la stazione? Vorrei una tazza di caffè, per favore.",
    "pt": "Onde fica a estação de trem? Eu gostaria de uma xícara de café.",
    "ru": "Где находится вокзал? Я хотел бы чашку кофе.",
    "ko": "기차역이 어디에 있어요? 커피 한 잔 주세요.",
}


@pytest.fixture(scope="module")
def identifier() -> LanguageIdentifier:
    ident = LanguageIdentifier(DEMO_LANGUAGES)
    ident.load()
    return ident


def test_restricted_to_the_languages_given(identifier: LanguageIdentifier) -> None:
    assert sorted(identifier.languages) == sorted(DEMO_LANGUAGES)


@pytest.mark.parametrize("language", DEMO_LANGUAGES)
def test_identifies_each_demo_language(identifier: LanguageIdentifier, language: str) -> None:
    found = identifier.identify(SENTENCES[language])
    assert found is not None
    assert found[0] == language
    assert not identifier.mismatch(SENTENCES[language], language)


def test_mismatch_is_another_language(identifier: LanguageIdentifier) -> None:
    assert identifier.mismatch(SENTENCES["es"], "de")
    assert identifier.mismatch(SENTENCES["en"], "fr-FR")
    assert not identifier.mismatch(SENTENCES["pt"], "pt-BR")


def test_short_texts_are_not_judged(identifier: LanguageIdentifier) -> None:
    assert identifier.identify("Hallo") is None
    assert not identifier.mismatch("Merci", "de")


def test_han_only_text_is_chinese_not_japanese(identifier: LanguageIdentifier) -> None:
    found = identifier.identify("東京都庁舎展望台入場料無料開放時間案内")
    assert found is not None and found[0] == "zh"


def test_unknown_codes_are_dropped() -> None:
    ident = LanguageIdentifier(["en", "de", "xx"])
    assert sorted(ident.languages) == ["de", "en"]
