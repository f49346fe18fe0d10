"""Each detector on hand-made outputs, including non-Latin and mixed-script text."""

from __future__ import annotations

import pytest

from gateway.quality.detectors import (
    RepetitionConfig,
    copy_through,
    is_empty,
    is_truncated,
    length_ratio,
    repetition,
    script_mismatch,
)


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\u200b", " \u200b\ufeff "])
def test_empty(text: str) -> None:
    assert is_empty(text)


@pytest.mark.parametrize("text", ["a", " 。", "0", "中", "…"])
def test_not_empty(text: str) -> None:
    assert not is_empty(text)


def test_truncated_is_the_length_finish_reason() -> None:
    assert is_truncated("length")
    assert not is_truncated("eos_token")
    assert not is_truncated("stop_sequence")
    assert not is_truncated(None)


def test_repetition_finds_the_loop_period() -> None:
    assert repetition([7] * 12) == 1
    assert repetition([1, 2, 3, 4, 5, 6, *[8, 9] * 6]) == 2
    assert repetition([5, 6, 7, *[10, 11, 12, 13] * 4]) == 4
    # The demo model's own loop ('oFdFdFd...'): a period-2 tail over almost the whole output
    assert repetition([82, *[41, 71] * 9, 41]) == 2


@pytest.mark.parametrize(
    "ids",
    [
        list(range(20)),  # no repeat
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 9, 9],  # a short tail repeat
        [3, 3, 3, 3, 3, 3, 3],  # too short to judge
        [*range(30), 1, 2, 1, 2, 1, 2],  # a loop covering a small part of the output
        [1, 2, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9],  # a repeat that is not at the end
    ],
)
def test_no_repetition(ids: list[int]) -> None:
    assert repetition(ids) is None


def test_repetition_config_bounds_the_period() -> None:
    unit = list(range(20))
    assert repetition(unit * 3) is None  # period 20 is beyond max_period 16
    assert repetition(unit * 3, RepetitionConfig(max_period=20)) == 20


def test_copy_through() -> None:
    assert copy_through("Good morning, everyone.", "Good morning, everyone.")
    assert copy_through("Good morning, everyone.", "  good   MORNING, everyone. ")
    assert copy_through("Good morning, everyone.", "Good morning, everyone!")  # nearly equal
    assert copy_through("今天天气很好，我们去公园吧。", "今天天气很好，我们去公园吧。")
    assert copy_through("Ｇｏｏｄ ｍｏｒｎｉｎｇ", "Good morning")  # full-width folded by NFKC


def test_not_copy_through() -> None:
    assert not copy_through("Good morning, everyone.", "Guten Morgen, alle zusammen.")
    assert not copy_through("Good morning, everyone.", "大家早上好。")
    assert not copy_through("BMW", "BMW")  # too short to judge: names are their own translation
    assert not copy_through("Good morning, everyone.", "")


def test_length_ratio_counts_characters_without_spaces() -> None:
    assert length_ratio("ab cd", "abcd") == 1.0
    assert length_ratio("Good morning", "早上好") == pytest.approx(3 / 11)
    assert length_ratio("   ", "x") is None
    assert length_ratio("abc", "") == 0.0


@pytest.mark.parametrize(
    ("output", "target"),
    [
        ("Guten Morgen", "zh"),  # Latin for Chinese
        ("早上好", "de"),  # Han for German
        ("Доброе утро", "ja"),  # Cyrillic for Japanese
        ("おはようございます", "ko"),  # Kana for Korean
        ("Good morning", "ru"),
        ("صباح الخير", "he"),  # Arabic for Hebrew
        ("สวัสดีตอนเช้า", "hi"),  # Thai for Hindi
        ("这是一个test", "en"),  # mostly Han for English (4 units against 1)
    ],
)
def test_script_mismatch(output: str, target: str) -> None:
    assert script_mismatch(output, target)


@pytest.mark.parametrize(
    ("output", "target"),
    [
        ("早上好", "zh"),
        ("早上好", "zh-Hant"),
        ("おはようございます", "ja"),
        ("今日は良い天気です", "ja"),  # Han and Kana both Japanese
        ("좋은 아침입니다", "ko"),
        ("Доброе утро", "ru"),
        ("Guten Morgen", "de"),
        ("iPhone 15 Pro的价格是多少", "zh"),  # mixed, mostly Han units
        ("我喜欢Python编程", "zh"),
        ("Привет, world", "ru"),  # half and half: not a mismatch
        ("שלום עולם", "he"),
        ("नमस्ते दुनिया", "hi"),
        ("12345 !!!", "zh"),  # no letters: not judged
        ("anything", "xx"),  # unknown language: not judged
    ],
)
def test_no_script_mismatch(output: str, target: str) -> None:
    assert not script_mismatch(output, target)
