"""Schemathesis against a real ``gateway serve`` on loopback: every case its OpenAPI schema allows (and many it
does not) gets no server error and no answer outside the schema (status, content type, headers, body).

A fixed seed and a bounded number of cases per operation keep the run reproducible and under a minute or so.
Each configuration is one entry of ``CONFIGS``: the gateway's settings and the headers schemathesis sends.

One status is allowed besides 2xx-4xx: 504, which the schema documents for a request whose deadline passed, and
which the fuzzer causes on purpose with its own ``timeout_s`` of a few microseconds. The fault routes stay off
(the fuzzer would switch the model's faults on).

With a key configured, ``ignored_auth`` also checks that the routes the schema secures refuse a request without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.gateway_process import running, start_gateway

SEED = 19
EXAMPLES_PER_OPERATION = 100
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
CONFIG = """
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "504"]
"""
KEY = "schemathesis-key-0123456789"


@dataclass(frozen=True)
class Config:
    settings: dict[str, object] = field(default_factory=dict)
    headers: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()


CONFIGS = [
    pytest.param(Config(), id="no-key"),
    pytest.param(Config({"api_key": KEY}, (f"Authorization: Bearer {KEY}",), ("ignored_auth",)), id="with-key"),
]


def _schemathesis(url: str, tmp_path: Path, config: Config) -> tuple[dict[str, Any], str]:
    """Run schemathesis's CLI against ``url``; its JSON report and its output."""
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(CONFIG)
    report = tmp_path / "report.json"
    argv = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config_file), "run", f"{url}/openapi.json"]
    argv += ["--seed", str(SEED), "--max-examples", str(EXAMPLES_PER_OPERATION)]
    argv += ["--checks", ",".join(CHECKS + config.checks)]
    argv += ["--workers", "1", "--request-timeout", "30", "--no-color", "--no-shrink"]
    argv += ["--generation-database", "none", "--report", "json", "--report-json-path", str(report)]
    for header in config.headers:
        argv += ["--header", header]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=360)
    output = done.stdout + done.stderr
    print(output[-2500:])
    assert report.exists(), output[-12000:]
    return json.loads(report.read_text()), output


@pytest.mark.timeout(420)
@pytest.mark.parametrize("config", CONFIGS)
def test_no_server_error_and_no_answer_outside_the_schema(demo_cache_dir: Path, tmp_path: Path, config: Config) -> None:
    settings = {"max_new_tokens_limit": 64, **config.settings}
    log = tmp_path / "gateway.log"  # a line per request: to a file, since nothing reads a pipe while it runs
    with running(start_gateway(demo_cache_dir, settings, log=log)) as server:
        report, output = _schemathesis(server.url, tmp_path, config)
    assert report["complete"] and not report["errors"], output[-12000:]
    assert report["test_cases"]["generated"] > 1000
    assert not report["failures"], output[-12000:]
    assert report["exit_code"] == 0, output[-12000:]
