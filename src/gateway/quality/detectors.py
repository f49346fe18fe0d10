"""Detectors over one finished output. Each is a pure function of the output (and, for translation, its input):
cheap, bounded in time (long texts are cut before the quadratic parts), no I/O.

The flags are the contract's ``flag`` label values; ``language_mismatch`` needs a language-identification model
and lives in ``quality.langid``.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway.quality.scripts import expected_scripts, script_units

__all__ = [
    "RepetitionConfig",
    "copy_through",
    "is_empty",
    "is_truncated",
    "length_ratio",
    "normalize",
    "repetition",
    "script_mismatch",
]

# Texts are compared on at most this many characters: SequenceMatcher is quadratic in the worst case.
COMPARE_CHARS: Final = 2000
_SPACE = re.compile(r"\s+")


def is_empty(text: str) -> bool:
    """No visible character: nothing at all, or only spaces and invisible format characters."""
    return not any(not ch.isspace() and unicodedata.category(ch) not in ("Cf", "Cc") for ch in text)


def is_truncated(finish_reason: str | None) -> bool:
    """The output stopped at its token budget (``length``) rather than on EOS or a stop sequence."""
    return finish_reason == "length"


@dataclass(frozen=True)
class RepetitionConfig:
    """When a tail of generated tokens counts as a loop.

    A loop is a suffix made of one unit of ``period`` tokens (1 to ``max_period``) repeated at least
    ``min_repeats`` times, covering at least ``min_coverage`` of the output; outputs shorter than ``min_tokens``
    are not judged (a few tokens cannot show a loop).
    """

    min_tokens: int = 8
    max_period: int = 16
    min_repeats: int = 3
    min_coverage: float = 0.5


def repetition(token_ids: Sequence[int], config: RepetitionConfig = RepetitionConfig()) -> int | None:
    """The period of the loop the output ends in, or None. O(len * max_period)."""
    n = len(token_ids)
    if n < config.min_tokens:
        return None
    for period in range(1, min(config.max_period, n // config.min_repeats) + 1):
        matched = 0  # tokens (from the end) equal to the token one period earlier
        i = n - 1
        while i >= period and token_ids[i] == token_ids[i - period]:
            matched += 1
            i -= 1
        covered = matched + period
        if covered >= period * config.min_repeats and covered >= config.min_coverage * n:
            return period
    return None


def normalize(text: str) -> str:
    """Case-folded, NFKC, whitespace collapsed: the form copy-through compares."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def copy_through(source: str, output: str, *, min_chars: int = 5, min_similarity: float = 0.9) -> bool:
    """The output is the input, or nearly (SequenceMatcher ratio of the normalized texts >= ``min_similarity``).

    Inputs shorter than ``min_chars`` are not judged: a name or a number is often its own translation.
    """
    a, b = normalize(source)[:COMPARE_CHARS], normalize(output)[:COMPARE_CHARS]
    if len(a) < min_chars or not b:
        return False
    if a == b:
        return True
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return (
        matcher.real_quick_ratio() >= min_similarity
        and matcher.quick_ratio() >= min_similarity
        and (matcher.ratio() >= min_similarity)
    )


def length_ratio(source: str, output: str) -> float | None:
    """Characters out over characters in (spaces ignored); None for an empty input."""
    chars_in = sum(1 for ch in source if not ch.isspace())
    if chars_in == 0:
        return None
    return sum(1 for ch in output if not ch.isspace()) / chars_in


def script_mismatch(output: str, target_lang: str, *, min_share: float = 0.5) -> bool:
    """Fewer than ``min_share`` of the output's script units are in the target language's scripts.

    Not judged (False) when the language is not in the table or the output has no letters.
    """
    expected = expected_scripts(target_lang)
    if expected is None:
        return False
    units = script_units(output)
    total = sum(units.values())
    if total == 0:
        return False
    matching = sum(count for script, count in units.items() if script in expected)
    return matching < min_share * total
