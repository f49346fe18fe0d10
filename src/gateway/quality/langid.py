"""Language identification of outputs, for the ``language_mismatch`` flag, through py3langid.

py3langid was chosen over lingua-language-detector by measurement (docs/quality.md has the figures): on short
hand-made sentences in the demo languages both were right on every one when restricted to those languages,
py3langid answered in about half the time per call, loads in well under a second from a 4.5 MB package (its
model is npz inside LZMA, no pickle), where lingua's package is ~100 MB and its all-languages detector took
~11 s and over a gigabyte to load.

A call costs tens of microseconds of CPU under the GIL: the evaluator runs it off the event loop, and only on a
sampled fraction of responses. The model loads on first use (or ``load()``), once, under a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Final

from gateway.quality.scripts import HIRAGANA, KATAKANA, script_units

__all__ = ["LanguageIdentifier", "base_code"]

# Texts with fewer letters than this are not identified: a few letters say little about their language.
MIN_LETTERS: Final = 12


def base_code(tag: str) -> str:
    return tag.strip().replace("_", "-").split("-", 1)[0].lower()


class LanguageIdentifier:
    """py3langid's classifier, restricted to ``languages`` (ISO 639-1 codes; the ones it does not know are
    dropped; none left or None: every language it knows)."""

    def __init__(self, languages: Iterable[str] | None = None, *, min_confidence: float = 0.9) -> None:
        self._wanted = None if languages is None else sorted({base_code(c) for c in languages if c.strip()})
        self.min_confidence = min_confidence
        self._lock = threading.Lock()
        self._model: Any = None

    def load(self) -> None:
        """Load the model now (blocking, about half a second): call it off the event loop."""
        with self._lock:
            if self._model is not None:
                return
            from py3langid.langid import MODEL_FILE
            from py3langid.langid import LanguageIdentifier as Model

            model = Model.from_model_file(MODEL_FILE, norm_probs=True)
            if self._wanted is not None:
                labels = set(model.labels)
                known = [code for code in self._wanted if code in labels]
                if len(known) > 1:
                    model.set_languages(known)
            self._model = model

    @property
    def languages(self) -> list[str]:
        self.load()
        return list(self._model.labels)

    def identify(self, text: str) -> tuple[str, float] | None:
        """(language code, probability), or None when the text has too few letters to tell."""
        if sum(1 for ch in text if ch.isalpha()) < MIN_LETTERS:
            return None
        self.load()
        language, probability = self._model.classify(text)
        code = str(language)
        if code == "ja" and not _has_kana(text):
            code = "zh"  # Han-only text: Japanese is written with kana, so this is Chinese
        return code, float(probability)

    def mismatch(self, text: str, target_lang: str) -> bool:
        """The text is confidently identified as a language other than ``target_lang``."""
        found = self.identify(text)
        if found is None:
            return False
        language, probability = found
        return probability >= self.min_confidence and language != base_code(target_lang)


def _has_kana(text: str) -> bool:
    units = script_units(text)
    return units[HIRAGANA] + units[KATAKANA] > 0
