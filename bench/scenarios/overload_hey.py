"""Overload through ``hey``: an external load generator (Go, its own process on the same cores) holds
``OVERLOAD_CLIENTS`` keep-alive connections against a gateway whose queue holds ``OVERLOAD_QUEUE`` rows, each
sending its next request the moment the last is answered. hey does not honour ``Retry-After``: this is the harsh
version of ``bench.scenarios.overload``, whose polite clients wait as they are told.

hey's ``-o csv`` prints one line per answered request (response time in seconds, status code) and drops the
requests that failed (connection errors, its own timeout) without a word. So every request carries one
``X-Request-ID``, and the gateway's access log says how many of them it finished: those it finished that hey has
no answer for are lost (hey gave up on them, or the connection broke under them). A request that never reached
the gateway is counted by neither side; hey's exit status and the gateway still running after it cover that.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import percentile
from bench.systems import System, gateway
from bench.workload import OVERLOAD_CLIENTS, OVERLOAD_SETTINGS, prompts

REQUEST_ID = "bench-hey-overload"  # the X-Request-ID of every request hey sends, to find them in the gateway's log
HEY_TIMEOUT_S = 30  # hey's per-request timeout: an answer slower than this counts as lost


@dataclass
class HeyOverload:
    """What hey recorded (response times by status code) and what the gateway logged of hey's requests."""

    latencies: dict[int, list[float]] = field(default_factory=dict)
    logged: dict[int, list[float]] = field(default_factory=dict)
    exit_code: int = 0
    gateway_alive: bool = True

    @property
    def answered(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    @property
    def accepted(self) -> list[float]:
        return self.latencies.get(200, [])

    @property
    def rejected(self) -> list[float]:
        return self.latencies.get(429, [])

    @property
    def other(self) -> dict[int, int]:
        """Answers that were neither 200 nor 429, by status code."""
        return {s: len(v) for s, v in sorted(self.latencies.items()) if s not in (200, 429)}

    @property
    def logged_count(self) -> int:
        """hey's requests the gateway finished (its access log)."""
        return sum(len(v) for v in self.logged.values())

    @property
    def lost(self) -> int:
        """Requests the gateway finished that hey has no answer for."""
        return max(self.logged_count - self.answered, 0)

    @property
    def ok(self) -> bool:
        """Both outcomes seen, nothing else, nothing lost, hey and the gateway fine, the 429s' p99 under 20 ms."""
        return (
            bool(self.accepted and self.rejected)
            and not self.other
            and not self.lost
            and self.exit_code == 0
            and self.gateway_alive
            and percentile(self.rejected, 0.99) < 0.020
        )


def parse_hey_csv(text: str) -> dict[int, list[float]]:
    """Response times (s) by status code from hey's ``-o csv`` output (a header, then one line per answer)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("response-time,"):
        raise ValueError(f"not hey's CSV output: {text[:200]!r}")
    header = lines[0].split(",")
    time_col, status_col = header.index("response-time"), header.index("status-code")
    out: dict[int, list[float]] = {}
    for line in lines[1:]:
        cells = line.split(",")
        out.setdefault(int(cells[status_col]), []).append(float(cells[time_col]))
    return out


def logged_by_status(log: Path, request_id: str = REQUEST_ID) -> dict[int, list[float]]:
    """Latencies (s) the gateway logged for the requests with ``request_id``, by status code."""
    out: dict[int, list[float]] = {}
    for line in log.read_text().splitlines():
        if '"request finished"' in line and request_id in line:
            record = json.loads(line)
            if record.get("request_id") == request_id:
                out.setdefault(int(record["status_code"]), []).append(record["latency_ms"] / 1000)
    return out


def hey_command(system: System, max_new_tokens: int, duration_s: float) -> list[str]:
    """hey at ``OVERLOAD_CLIENTS`` connections for ``duration_s``, POSTing one generation body over and over."""
    path, body = system.wire.request(prompts(1)[0], max_new_tokens)
    return [
        "hey",
        *("-z", f"{duration_s:g}s", "-c", str(OVERLOAD_CLIENTS), "-t", str(HEY_TIMEOUT_S)),
        *("-m", "POST", "-T", "application/json", "-H", f"X-Request-ID: {REQUEST_ID}"),
        *("-d", json.dumps(body), "-o", "csv", system.url + path),
    ]


def hey_installed() -> bool:
    return shutil.which("hey") is not None


def overload_hey_run(cache: Path, log: Path, model: str, max_new_tokens: int, duration_s: float) -> HeyOverload:
    """hey against a fresh gateway whose queue holds ``OVERLOAD_QUEUE`` rows, its JSON log in ``log``; the log
    is read once the gateway has stopped, so every request it finished is in it."""
    with gateway(cache, log, model, OVERLOAD_SETTINGS) as system:
        asyncio.run(system.warm(max_new_tokens))
        done = subprocess.run(
            hey_command(system, max_new_tokens, duration_s),
            capture_output=True,
            text=True,
            timeout=duration_s + HEY_TIMEOUT_S + 30,
        )
        alive = system.server.proc.poll() is None
    if done.returncode != 0:
        print(f"hey exited with {done.returncode}: {done.stderr[-2000:]}", file=sys.stderr)
    latencies = parse_hey_csv(done.stdout) if done.stdout.startswith("response-time,") else {}
    return HeyOverload(latencies, logged_by_status(log), done.returncode, alive)
