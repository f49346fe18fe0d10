"""The bench's overload through hey (``bench/scenarios/overload_hey.py``), from hey's output and the gateway's log.

``make bench`` is not run by CI and hey is installed by ``make bench`` only, so what is checked here is how the
bench reads them: hey's ``-o csv`` lines (as hey 0.1.4 prints them) into response times by status, the gateway's
access-log records of hey's requests, what counts as lost, and the report's section, target row and JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.report import hey_section, hey_summary
from bench.scenarios.overload_hey import REQUEST_ID, HeyOverload, logged_by_status, parse_hey_csv

HEY_CSV = """response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset
0.4120,0.0004,0.0000,0.0001,0.4113,0.0001,200,0.0021
0.0031,0.0000,0.0000,0.0000,0.0030,0.0000,429,0.0040
0.0052,0.0000,0.0000,0.0000,0.0051,0.0000,429,0.0046
0.0019,0.0000,0.0000,0.0000,0.0018,0.0000,429,0.0073
0.3980,0.0003,0.0000,0.0001,0.3975,0.0001,200,0.0101
0.0410,0.0000,0.0000,0.0000,0.0409,0.0000,503,0.0122
"""


def log_line(request_id: str, status: int, latency_ms: float, message: str = "request finished") -> str:
    return json.dumps(
        {
            "message": message,
            "request_id": request_id,
            "route": "/generate",
            "status_code": status,
            "latency_ms": latency_ms,
        }
    )


def test_hey_csv_gives_response_times_by_status() -> None:
    times = parse_hey_csv(HEY_CSV)
    assert times == {200: [0.412, 0.398], 429: [0.0031, 0.0052, 0.0019], 503: [0.041]}


@pytest.mark.parametrize("text", ["", "Summary:\n  Total: 10.0 secs\n", "0.4120,200\n"])
def test_anything_but_hey_csv_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not hey's CSV"):
        parse_hey_csv(text)


def test_only_heys_requests_are_read_from_the_gateway_log(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    lines = [
        log_line("warm-up-0123", 200, 80.0),  # the warm-up's requests carry ids of their own
        log_line(REQUEST_ID, 429, 1.5),
        log_line(REQUEST_ID, 200, 410.0),
        log_line(REQUEST_ID, 429, 2.5, message="request refused"),
        "not json: a line of uvicorn's own",
        log_line(REQUEST_ID, 429, 0.5),
    ]
    log.write_text("\n".join(lines) + "\n")
    assert logged_by_status(log) == {429: [0.0015, 0.0005], 200: [0.41]}


def test_requests_the_gateway_finished_but_hey_did_not_answer_are_lost() -> None:
    hey = HeyOverload(parse_hey_csv(HEY_CSV), logged={200: [0.41] * 3, 429: [0.002] * 3, 503: [0.04]})
    assert hey.answered == 6
    assert hey.logged_count == 7
    assert hey.lost == 1
    assert hey.other == {503: 1}
    assert not hey.ok


def test_the_target_needs_both_outcomes_fast_429s_and_nothing_else() -> None:
    times = {200: [0.41, 0.39], 429: [0.003, 0.005, 0.002]}
    logged = {200: [0.4, 0.38], 429: [0.001, 0.001, 0.001]}
    assert HeyOverload(dict(times), dict(logged)).ok
    assert not HeyOverload({**times, 429: [0.003, 0.005, 0.025]}, dict(logged)).ok  # p99 of three is near the max
    assert not HeyOverload({200: times[200]}, {200: logged[200]}).ok  # nothing refused: not an overload
    assert not HeyOverload(dict(times), dict(logged), exit_code=1).ok
    assert not HeyOverload(dict(times), dict(logged), gateway_alive=False).ok


def test_the_report_section_and_json() -> None:
    hey = HeyOverload(parse_hey_csv(HEY_CSV), logged={200: [0.41, 0.39], 429: [0.001, 0.002, 0.004], 503: [0.04]})
    text = "\n".join(hey_section(hey, 10.0))
    assert "## Overload through hey: 64 connections, queue of 16, 10 s" in text
    assert "| 2 | 3 | {503: 1} | 0 | 3.1 | 5.2 | 5.2 | 405.0 | 411.9 | 412.0 |" in text
    assert "p50 2.0 ms, p99 4.0 ms, max 4.0 ms" in text
    numbers = hey_summary(hey)
    assert numbers is not None
    assert (numbers["accepted"], numbers["rejected"], numbers["other"], numbers["lost"]) == (2, 3, {"503": 1}, 0)
    assert numbers["rejected_latency_ms_client"]["p100"] == 5.2
    assert numbers["met"] is False


def test_without_hey_the_section_says_so() -> None:
    assert "hey not installed" in "\n".join(hey_section(None, 10.0))
    assert hey_summary(None) is None
