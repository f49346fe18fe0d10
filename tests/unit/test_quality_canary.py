"""Canary files (YAML and JSON lines), their validation, and checking answers against expectations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.quality.canary import CanaryCase, Expectation, check_answer, chrf, load_canaries, parse_canaries
from gateway.quality.langid import LanguageIdentifier

YAML_FILE = """
canaries:
  - name: capital
    kind: generate
    prompt: "The capital of France is"
    max_new_tokens: 8
    expect: {contains: Paris, regex: "(?i)paris"}
  - kind: translate
    text: Good morning
    source_lang: en
    target_lang: de
    expect: {reference: "Guten Morgen", min_chrf: 60, language: de}
"""


def test_load_yaml(tmp_path: Path) -> None:
    path = tmp_path / "canaries.yaml"
    path.write_text(YAML_FILE)
    first, second = load_canaries(path)
    assert first == CanaryCase(
        name="capital",
        kind="generate",
        text="The capital of France is",
        max_new_tokens=8,
        expect=Expectation(contains=("Paris",), regex="(?i)paris"),
    )
    assert second.name == "translate-1" and second.target_lang == "de"
    assert second.expect.reference == "Guten Morgen" and second.expect.min_chrf == 60.0


def test_load_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "canaries.jsonl"
    rows = [
        {"name": "a", "prompt": "2 + 2 =", "expect": {"exact": " 4"}},
        {"name": "b", "kind": "translate", "text": "Hi there", "source_lang": "en", "target_lang": "fr",
         "expect": {"contains": ["Salut", "!"]}},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    cases = load_canaries(path)
    assert [c.name for c in cases] == ["a", "b"]
    assert cases[0].kind == "generate" and cases[0].expect.exact == " 4"
    assert cases[1].expect.contains == ("Salut", "!")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"prompt": "x"}, "expect"),
        ({"prompt": "x", "expect": {}}, "at least one of"),
        ({"prompt": "x", "expect": {"exakt": "y"}}, "unknown keys"),
        ({"prompt": "", "expect": {"exact": "y"}}, "text"),
        ({"kind": "chat", "prompt": "x", "expect": {"exact": "y"}}, "kind"),
        ({"kind": "translate", "text": "x", "expect": {"exact": "y"}}, "source_lang"),
        ({"prompt": "x", "expect": {"regex": "("}}, "regex"),
        ({"prompt": "x", "max_new_tokens": 0, "expect": {"exact": "y"}}, "max_new_tokens"),
        ({"prompt": "x", "colour": 1, "expect": {"exact": "y"}}, "unknown keys"),
    ],
)
def test_invalid_cases_are_refused_with_a_reason(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_canaries([entry])


def test_duplicate_names_and_empty_files_are_refused(tmp_path: Path) -> None:
    case = {"name": "a", "prompt": "x", "expect": {"exact": "y"}}
    with pytest.raises(ValueError, match="duplicate"):
        parse_canaries([case, case])
    path = tmp_path / "empty.yaml"
    path.write_text("canaries: []\n")
    with pytest.raises(ValueError, match="non-empty list"):
        load_canaries(path)


def case(**expect: object) -> CanaryCase:
    return parse_canaries([{"name": "c", "prompt": "p", "expect": expect}])[0]


def test_exact_contains_regex() -> None:
    assert check_answer(case(exact="Paris."), "Paris.").passed
    assert not check_answer(case(exact="Paris."), "Paris").passed
    assert check_answer(case(contains=["Par", "is"]), "It is Paris").passed
    result = check_answer(case(contains=["Paris", "France"]), "Paris")
    assert not result.passed and "France" in result.reason
    assert check_answer(case(regex=r"^\s*\d+$"), " 42").passed
    assert not check_answer(case(regex=r"^\s*\d+$"), "forty-two").passed
    # Every expectation given must hold.
    assert not check_answer(case(contains="Paris", regex="Lyon"), "Paris").passed


def test_language_expectation() -> None:
    identifier = LanguageIdentifier(["en", "de", "fr"])
    german = "Guten Morgen, wie geht es Ihnen heute?"
    assert check_answer(case(language="de"), german, identifier).passed
    result = check_answer(case(language="fr"), german, identifier)
    assert not result.passed and "identified as de" in result.reason
    assert not check_answer(case(language="de"), "Ja", identifier).passed  # too short to tell: not a pass


def test_reference_scored_with_chrf() -> None:
    assert chrf("Guten Morgen", "Guten Morgen") == pytest.approx(100.0)
    close = check_answer(case(reference="Guten Morgen, wie geht es Ihnen?"), "Guten Morgen, wie geht es dir?")
    assert close.passed and close.chrf is not None and 50 < close.chrf < 100
    far = check_answer(case(reference="Guten Morgen, wie geht es Ihnen?", min_chrf=50), "Bonjour à tous")
    assert not far.passed and far.chrf is not None and far.chrf < 50 and "chrF" in far.reason
    # chrF is reported even when another expectation fails first.
    both = check_answer(case(exact="x", reference="Guten Morgen"), "Guten Morgen")
    assert not both.passed and both.chrf == pytest.approx(100.0)
