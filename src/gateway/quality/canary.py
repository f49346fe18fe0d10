"""Canary cases: known prompts with what their answer must satisfy, loaded from a file and checked.

A canary file is YAML (a list, or a mapping with a ``canaries`` list) or JSON lines (``.jsonl``: one case per
line). Each case::

    name: greeting-de                  # optional; defaults to the kind and position
    kind: translate                    # generate | translate
    text: "Good morning"               # the prompt (``prompt`` is accepted as the same key)
    source_lang: en                    # translate only
    target_lang: de                    # translate only
    model: null                        # optional: the model that should answer it (default: the route's)
    max_new_tokens: 20                 # optional
    expect:                            # one or more of these; every one given must hold
      exact: "Guten Morgen"            # the whole answer, character for character
      contains: ["Morgen"]             # each substring (a string or a list)
      regex: "(?i)guten"               # re.search
      language: de                     # identified as this language (py3langid)
      reference: "Guten Morgen"        # chrF (sacrebleu, 0-100) against this reference translation ...
      min_chrf: 50                     # ... at least this (default 50)

A case without any expectation is refused when the file is read, so a canary can never pass by default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from gateway.quality.langid import LanguageIdentifier

__all__ = ["CanaryCase", "CheckResult", "Expectation", "check_answer", "chrf", "load_canaries", "parse_canaries"]

DEFAULT_MIN_CHRF: Final = 50.0
_KINDS: Final = ("generate", "translate")
_CASE_KEYS: Final = frozenset(
    {"name", "kind", "text", "prompt", "source_lang", "target_lang", "model", "max_new_tokens", "expect"}
)
_EXPECT_KEYS: Final = frozenset({"exact", "contains", "regex", "language", "reference", "min_chrf"})


@dataclass(frozen=True)
class Expectation:
    exact: str | None = None
    contains: tuple[str, ...] = ()
    regex: str | None = None
    language: str | None = None
    reference: str | None = None
    min_chrf: float = DEFAULT_MIN_CHRF

    @property
    def empty(self) -> bool:
        return (
            self.exact is None
            and not self.contains
            and self.regex is None
            and not self.language
            and (self.reference is None)
        )


@dataclass(frozen=True)
class CanaryCase:
    name: str
    kind: Literal["generate", "translate"]
    text: str
    expect: Expectation
    source_lang: str | None = None
    target_lang: str | None = None
    model: str | None = None
    max_new_tokens: int = 20


@dataclass(frozen=True)
class CheckResult:
    """``passed``, and why not (the first expectation that failed); ``chrf`` when a reference was given."""

    passed: bool
    reason: str = ""
    chrf: float | None = None


def chrf(hypothesis: str, reference: str) -> float:
    """Sentence chrF (sacrebleu's defaults: character 6-grams, beta 2), 0 to 100."""
    from sacrebleu.metrics.chrf import CHRF

    return float(CHRF().sentence_score(hypothesis, [reference]).score)


def check_answer(case: CanaryCase, answer: str, identifier: LanguageIdentifier | None = None) -> CheckResult:
    """Whether ``answer`` meets every expectation of ``case``. Blocking when ``language`` or ``reference`` is
    given (language identification, chrF): call it from a worker thread there."""
    expect = case.expect
    score = chrf(answer, expect.reference) if expect.reference is not None else None
    if expect.exact is not None and answer != expect.exact:
        return CheckResult(False, "differs from the expected exact answer", score)
    for part in expect.contains:
        if part not in answer:
            return CheckResult(False, f"does not contain {part!r}", score)
    if expect.regex is not None and re.search(expect.regex, answer) is None:
        return CheckResult(False, f"does not match /{expect.regex}/", score)
    if expect.language:
        identifier = identifier or LanguageIdentifier()
        found = identifier.identify(answer)
        if found is None or found[0] != expect.language.split("-", 1)[0].lower():
            return CheckResult(False, f"identified as {found[0] if found else 'nothing'}, not {expect.language}", score)
    if score is not None and score < expect.min_chrf:
        return CheckResult(False, f"chrF {score:.1f} below {expect.min_chrf:g}", score)
    return CheckResult(True, "", score)


def load_canaries(path: str | Path) -> list[CanaryCase]:
    """Read a canary file (YAML, or JSON lines for ``.jsonl``); ``ValueError`` names what is wrong."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        data: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        import yaml

        data = yaml.safe_load(text)
        if isinstance(data, Mapping):
            data = data.get("canaries")
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty list of canary cases")
    return parse_canaries(data, origin=str(path))


def parse_canaries(entries: Sequence[Any], *, origin: str = "canaries") -> list[CanaryCase]:
    cases = []
    for index, entry in enumerate(entries):
        where = f"{origin}[{index}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: a case must be a mapping")
        cases.append(_case(entry, where, index))
    names = [c.name for c in cases]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"{origin}: duplicate case names {duplicated}")
    return cases


def _case(entry: Mapping[str, Any], where: str, index: int) -> CanaryCase:
    unknown = set(entry) - _CASE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    kind = entry.get("kind", "generate")
    if kind not in _KINDS:
        raise ValueError(f"{where}.kind: must be one of {list(_KINDS)}")
    text = entry.get("text", entry.get("prompt"))
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}.text: a non-empty string is required")
    source, target = entry.get("source_lang"), entry.get("target_lang")
    if kind == "translate" and not (isinstance(source, str) and isinstance(target, str)):
        raise ValueError(f"{where}: a translate case needs source_lang and target_lang")
    max_new = entry.get("max_new_tokens", 20)
    if not isinstance(max_new, int) or max_new < 1:
        raise ValueError(f"{where}.max_new_tokens: a positive integer is required")
    return CanaryCase(
        name=str(entry.get("name") or f"{kind}-{index}"),
        kind=kind,
        text=text,
        expect=_expectation(entry.get("expect"), f"{where}.expect"),
        source_lang=source,
        target_lang=target,
        model=entry.get("model"),
        max_new_tokens=max_new,
    )


def _expectation(raw: Any, where: str) -> Expectation:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a mapping of expectations is required")
    unknown = set(raw) - _EXPECT_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    contains = raw.get("contains", ())
    contains = (contains,) if isinstance(contains, str) else tuple(str(c) for c in contains)
    regex = raw.get("regex")
    if regex is not None:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"{where}.regex: {exc}") from exc
    expect = Expectation(
        exact=raw.get("exact"),
        contains=contains,
        regex=regex,
        language=raw.get("language"),
        reference=raw.get("reference"),
        min_chrf=float(raw.get("min_chrf", DEFAULT_MIN_CHRF)),
    )
    if expect.empty:
        raise ValueError(f"{where}: at least one of exact, contains, regex, language, reference is required")
    return expect
