"""Unicode scripts of letters, and the scripts each target language is written in.

Python's ``unicodedata`` has no script property, so the script of a letter comes from the block ranges below
(the blocks of Unicode's Scripts.txt that hold the letters of each script; a test checks every range against
``unicodedata.name``). Only letters (general category ``L*``) are classified: digits, punctuation, symbols and
spaces belong to no script here.

Scripts are counted in *units* rather than letters, so that mixed-script text is judged fairly: a run of
letters of an alphabetic script (Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari, Thai, Hangul) is one unit
(a word), while each Han or Kana character is a unit of its own (one character is about one word there).
"iPhone 15 Pro的价格" is so 2 Latin units and 3 Han units, not 8 letters against 3.
"""

from __future__ import annotations

import bisect
import unicodedata
from collections import Counter
from typing import Final

__all__ = ["LANGUAGE_SCRIPTS", "SCRIPT_RANGES", "expected_scripts", "script_of", "script_units"]

HAN: Final = "Han"
HIRAGANA: Final = "Hiragana"
KATAKANA: Final = "Katakana"
HANGUL: Final = "Hangul"
LATIN: Final = "Latin"
CYRILLIC: Final = "Cyrillic"
GREEK: Final = "Greek"
ARABIC: Final = "Arabic"
HEBREW: Final = "Hebrew"
DEVANAGARI: Final = "Devanagari"
THAI: Final = "Thai"
BENGALI: Final = "Bengali"
KHMER: Final = "Khmer"
MYANMAR: Final = "Myanmar"

# Scripts whose characters are each a unit (no spaces between words).
_PER_CHARACTER: Final = frozenset({HAN, HIRAGANA, KATAKANA})

# (first, last, script), sorted and non-overlapping: a declarative table.
SCRIPT_RANGES: Final[tuple[tuple[int, int, str], ...]] = (
    (0x0041, 0x005A, LATIN), (0x0061, 0x007A, LATIN), (0x00AA, 0x00AA, LATIN), (0x00BA, 0x00BA, LATIN),
    (0x00C0, 0x00D6, LATIN), (0x00D8, 0x00F6, LATIN), (0x00F8, 0x024F, LATIN),
    (0x0370, 0x03FF, GREEK), (0x0400, 0x052F, CYRILLIC), (0x0590, 0x05FF, HEBREW), (0x0600, 0x06FF, ARABIC),
    (0x0750, 0x077F, ARABIC), (0x08A0, 0x08FF, ARABIC), (0x0900, 0x097F, DEVANAGARI), (0x0980, 0x09FF, BENGALI),
    (0x0E00, 0x0E7F, THAI), (0x1000, 0x109F, MYANMAR), (0x1100, 0x11FF, HANGUL), (0x1780, 0x17FF, KHMER),
    (0x1C80, 0x1C8F, CYRILLIC), (0x1E00, 0x1EFF, LATIN), (0x1F00, 0x1FFF, GREEK), (0x2C60, 0x2C7F, LATIN),
    (0x2DE0, 0x2DFF, CYRILLIC), (0x2E80, 0x2FDF, HAN), (0x3005, 0x3007, HAN), (0x3021, 0x3029, HAN),
    (0x3038, 0x303B, HAN), (0x3041, 0x309F, HIRAGANA), (0x30A0, 0x30FF, KATAKANA), (0x3131, 0x318F, HANGUL),
    (0x31F0, 0x31FF, KATAKANA), (0x3400, 0x4DBF, HAN), (0x4E00, 0x9FFF, HAN), (0xA640, 0xA69F, CYRILLIC),
    (0xA720, 0xA7FF, LATIN), (0xA8E0, 0xA8FF, DEVANAGARI), (0xA960, 0xA97F, HANGUL), (0xAB30, 0xAB64, LATIN),
    (0xAB65, 0xAB65, GREEK), (0xAB66, 0xAB6F, LATIN),
    (0xAC00, 0xD7AF, HANGUL), (0xD7B0, 0xD7FF, HANGUL), (0xF900, 0xFAFF, HAN), (0xFB00, 0xFB06, LATIN),
    (0xFB1D, 0xFB4F, HEBREW), (0xFB50, 0xFDFF, ARABIC), (0xFE70, 0xFEFF, ARABIC), (0xFF21, 0xFF3A, LATIN),
    (0xFF41, 0xFF5A, LATIN), (0xFF66, 0xFF9F, KATAKANA), (0xFFA0, 0xFFDC, HANGUL), (0x20000, 0x2FA1F, HAN),
    (0x30000, 0x3134F, HAN),
)  # fmt: skip
_STARTS: Final = tuple(first for first, _, _ in SCRIPT_RANGES)

# The scripts a language is normally written in (ISO 639-1 base codes). A language not here is not checked.
_LATIN_LANGUAGES: Final = (
    "en de fr es it pt nl sv da no fi pl cs hu ro tr vi id ms tl sk sl hr et lv lt ca eu gl ga is sq af sw"
)
LANGUAGE_SCRIPTS: Final[dict[str, frozenset[str]]] = {
    **{code: frozenset({LATIN}) for code in _LATIN_LANGUAGES.split()},
    **{code: frozenset({CYRILLIC}) for code in ("ru", "uk", "bg", "be", "mk", "kk", "mn")},
    "sr": frozenset({CYRILLIC, LATIN}),
    "zh": frozenset({HAN}),
    "ja": frozenset({HAN, HIRAGANA, KATAKANA}),
    "ko": frozenset({HANGUL, HAN}),
    "el": frozenset({GREEK}),
    **{code: frozenset({ARABIC}) for code in ("ar", "fa", "ur", "ps")},
    **{code: frozenset({HEBREW}) for code in ("he", "yi")},
    **{code: frozenset({DEVANAGARI}) for code in ("hi", "mr", "ne")},
    "bn": frozenset({BENGALI}),
    "th": frozenset({THAI}),
    "km": frozenset({KHMER}),
    "my": frozenset({MYANMAR}),
}


def script_of(char: str) -> str | None:
    """The script of one letter, or None for a non-letter or a script outside the table."""
    if not unicodedata.category(char).startswith("L"):
        return None
    point = ord(char)
    i = bisect.bisect_right(_STARTS, point) - 1
    if i >= 0:
        first, last, script = SCRIPT_RANGES[i]
        if first <= point <= last:
            return script
    return None


def script_units(text: str) -> Counter[str]:
    """Units per script in ``text`` (see the module docstring); letters of unknown scripts count as ``Other``."""
    units: Counter[str] = Counter()
    previous: str | None = None
    for char in text:
        if unicodedata.category(char).startswith("M"):
            continue  # a combining mark (a Devanagari vowel sign, a Thai tone mark) belongs to its letter's unit
        script = script_of(char) if char.isalpha() else None
        if script is None and char.isalpha():
            script = "Other"
        if script is not None and (script in _PER_CHARACTER or script != previous):
            units[script] += 1
        previous = script
    return units


def expected_scripts(language: str) -> frozenset[str] | None:
    """The scripts of a language tag (``zh-Hant`` -> Han), or None when the language is not in the table."""
    base = language.strip().replace("_", "-").split("-", 1)[0].lower()
    return LANGUAGE_SCRIPTS.get(base)
