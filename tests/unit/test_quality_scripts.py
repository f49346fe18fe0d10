"""Unicode scripts of letters: the range table against Unicode's own character names, and script units."""

from __future__ import annotations

import itertools
import unicodedata

import pytest

from gateway.quality.scripts import SCRIPT_RANGES, expected_scripts, script_of, script_units

# The word each script's letters carry in their Unicode names.
NAME_WORDS = {
    "Han": ("CJK", "IDEOGRAPH", "KANGXI", "IDEOGRAPHIC"),
    "Hiragana": ("HIRAGANA",),
    "Katakana": ("KATAKANA",),
    "Hangul": ("HANGUL",),
    "Latin": ("LATIN", "ORDINAL INDICATOR", "MODIFIER LETTER"),  # Latin Extended modifier letters
    "Cyrillic": ("CYRILLIC",),
    "Greek": ("GREEK", "COPTIC"),
    "Arabic": ("ARABIC",),
    "Hebrew": ("HEBREW",),
    "Devanagari": ("DEVANAGARI",),
    "Bengali": ("BENGALI",),
    "Thai": ("THAI",),
    "Khmer": ("KHMER",),
    "Myanmar": ("MYANMAR",),
}


def test_ranges_are_sorted_and_disjoint() -> None:
    for (_, last, _), (first, _, _) in itertools.pairwise(SCRIPT_RANGES):
        assert last < first


def test_every_letter_in_the_table_is_named_for_its_script() -> None:
    checked = 0
    for first, last, script in SCRIPT_RANGES:
        for point in range(first, min(last, first + 4000) + 1):
            char = chr(point)
            if not unicodedata.category(char).startswith("L"):
                assert script_of(char) is None
                continue
            name = unicodedata.name(char, "")
            if not name:
                continue  # unassigned in this Python's Unicode
            assert script_of(char) == script, (hex(point), name)
            assert any(word in name for word in NAME_WORDS[script]), (hex(point), name, script)
            checked += 1
    assert checked > 20_000


@pytest.mark.parametrize(
    ("char", "script"),
    [("a", "Latin"), ("É", "Latin"), ("ß", "Latin"), ("中", "Han"), ("あ", "Hiragana"), ("カ", "Katakana"),
     ("ｶ", "Katakana"), ("한", "Hangul"), ("Ж", "Cyrillic"), ("λ", "Greek"), ("ع", "Arabic"), ("ש", "Hebrew"),
     ("क", "Devanagari"), ("ก", "Thai"), ("1", None), ("!", None), (" ", None), ("。", None)],
)  # fmt: skip
def test_script_of(char: str, script: str | None) -> None:
    assert script_of(char) == script


def test_units_count_words_of_alphabets_and_characters_of_han_and_kana() -> None:
    assert script_units("iPhone 15 Pro的价格") == {"Latin": 2, "Han": 3}
    assert script_units("これはPythonです") == {"Hiragana": 5, "Latin": 1}
    assert script_units("Привет, мир! Hello") == {"Cyrillic": 2, "Latin": 1}
    assert script_units("नमस्ते दुनिया") == {"Devanagari": 2}  # vowel signs do not split a word
    assert script_units("안녕하세요 세계") == {"Hangul": 2}
    assert script_units("1234 !?") == {}


def test_expected_scripts() -> None:
    assert expected_scripts("zh-Hant") == {"Han"}
    assert expected_scripts("ja") == {"Han", "Hiragana", "Katakana"}
    assert expected_scripts("pt_BR") == {"Latin"}
    assert expected_scripts("ko") == {"Hangul", "Han"}
    assert expected_scripts("xx") is None
