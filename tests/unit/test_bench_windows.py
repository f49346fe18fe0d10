"""How the bench turns answers into throughput: tokens pro-rated into a window (``bench/scenarios/uniform.py``)
and the chat-against-generate ratios (``bench/scenarios/chat_vs_generate.py``). No server runs here: these are
the bench's arithmetic on answers it would have received."""

from __future__ import annotations

import argparse
import math

import pytest

from bench.report import Run, _chat_section, _chat_target
from bench.scenarios.chat_vs_generate import ChatVsGenerate
from bench.scenarios.uniform import _Window
from bench.workload import Uniform


def window() -> _Window:
    return _Window(measure_from=10.0, stop_at=20.0, workload=Uniform(64))


def test_a_request_wholly_inside_the_window_counts_all_its_tokens() -> None:
    w = window()
    w.count(sent=12.0, done=13.0, tokens=64)
    assert w.tokens == 64


def test_requests_across_the_window_edges_count_only_their_share_inside() -> None:
    w = window()
    w.count(sent=9.0, done=11.0, tokens=64)  # half inside, at the start
    w.count(sent=19.5, done=21.5, tokens=40)  # a quarter inside, at the end
    w.count(sent=8.0, done=9.5, tokens=64)  # all before
    w.count(sent=20.5, done=21.0, tokens=64)  # all after
    assert w.tokens == pytest.approx(32 + 10)


def test_cohorts_answered_together_give_the_same_rate_wherever_the_window_falls() -> None:
    """32 rows answered together every 2 s, each after 2 s of work: the rate is 32 * 64 / 2 tokens/s whether the
    window holds six cohorts' answers or five (counting whole answers would give 1,229 or 1,024 tokens/s)."""
    for offset in (0.0, 0.5, 1.0, 1.9):
        w = window()
        for k in range(-2, 14):
            done = offset + 2.0 * k
            for _ in range(32):
                w.count(sent=done - 2.0, done=done, tokens=64)
        assert w.tokens / 10.0 == pytest.approx(32 * 64 / 2)


def test_chat_against_generate_is_the_median_of_each_rounds_ratio() -> None:
    chat = ChatVsGenerate(rounds=[(95.0, 100.0, 110.0), (90.0, 100.0, 100.0), (99.0, 100.0, 90.0)])
    assert chat.ratio_same_tokens == pytest.approx(0.95)  # 0.95, 0.90, 0.99
    assert chat.ratio_same_text == pytest.approx(0.90)  # 0.86, 0.90, 1.10
    assert math.isnan(ChatVsGenerate().ratio_same_tokens)


def test_the_report_judges_chat_on_the_same_tokens_and_shows_the_same_text_beside() -> None:
    chat = ChatVsGenerate(rounds=[(94.0, 100.0, 110.0)])
    args = argparse.Namespace(warmup_s=1.5, measure_s=6.0)
    run = Run(args, [], [], None, [], [], [], chat)  # type: ignore[arg-type]  # the sections read chat and args
    (row,) = _chat_target(run)
    assert "| 0.94 | no |" in row and "same text: 0.85" in row
    section = "\n".join(_chat_section(run))
    assert "0.94 with the same tokens, 0.85 with the same text" in section
