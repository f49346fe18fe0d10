"""Language tags (``gateway.languages``): ISO 639-1 with an optional script or region subtag, and their names."""

from __future__ import annotations

import pytest

from gateway.languages import LANGUAGE_NAMES, NLLB_CODES, language_name, parse_language


@pytest.mark.parametrize(
    ("code", "parsed"),
    [
        ("en", ("en", "en")),
        ("FR", ("fr", "fr")),
        (" de ", ("de", "de")),
        ("ZH-hant", ("zh", "zh-Hant")),
        ("pt-br", ("pt", "pt-BR")),
        ("es-419", ("es", "es-419")),
        ("zh-Hant-TW", ("zh", "zh-Hant-TW")),
    ],
)
def test_well_formed_tags_are_normalized(code: str, parsed: tuple[str, str]) -> None:
    assert parse_language(code) == parsed


@pytest.mark.parametrize("code", ["", "e", "eng", "en_US", "en-", "en-Latn-", "12", "en-USA", "zh-Hant-TW-x"])
def test_malformed_tags_are_refused(code: str) -> None:
    assert parse_language(code) is None


def test_names_for_the_prompt_template() -> None:
    assert language_name("de") == "German"
    assert language_name("pt-BR") == "Portuguese"
    assert language_name("zh") == "Chinese"
    assert language_name("zh-hant") == "Traditional Chinese"
    assert language_name("xx") == "xx"  # well formed but unknown: the code itself
    assert language_name("not a tag") == "not a tag"


def test_every_named_language_has_an_nllb_code() -> None:
    assert NLLB_CODES.keys() == LANGUAGE_NAMES.keys()
