"""The shipped Prometheus and Alertmanager files, checked by the real promtool and amtool.

- ``promtool check config`` on deploy/prometheus/prometheus.yml (it also loads the rule files it names);
- ``promtool check rules`` on every rule file;
- ``promtool test rules`` on every unit-test file in deploy/prometheus/tests/ (each alert firing and silent,
  each recording rule's value);
- ``amtool check-config`` on deploy/alertmanager/alertmanager.yml, plus where its routing tree sends each
  severity.

Without the tools these tests skip, except when ``CI`` is set: then a missing tool is a failure, so that CI
cannot go green without having run them (install: ``apt-get install prometheus prometheus-alertmanager``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROM_DIR / "tests").glob("*.yml"))
AM_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found on PATH (apt-get install prometheus prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)


def _assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"


def test_there_is_something_to_check() -> None:
    assert [p.name for p in RULE_FILES] == ["alerts.yml", "recording.yml", "slo.yml"]
    assert RULE_TEST_FILES, "no promtool unit tests in deploy/prometheus/tests"


def test_prometheus_config() -> None:
    result = _run(_tool("promtool"), "check", "config", PROM_DIR / "prometheus.yml")
    _assert_ok(result)
    # check config also checks the rule files it names; make sure it found both
    out = result.stdout + result.stderr
    for rule_file in RULE_FILES:
        assert rule_file.name in out, out


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_rule_file(rule_file: Path) -> None:
    _assert_ok(_run(_tool("promtool"), "check", "rules", rule_file))


@pytest.mark.parametrize("test_file", RULE_TEST_FILES, ids=lambda p: p.name)
def test_rule_unit_tests(test_file: Path) -> None:
    # promtool resolves the test file's rule_files relative to the test file
    _assert_ok(_run(_tool("promtool"), "test", "rules", test_file))


def test_alertmanager_config() -> None:
    _assert_ok(_run(_tool("amtool"), "check-config", AM_CONFIG))


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=GatewayDown", "severity=critical", "job=gateway"], "critical"),
        (["alertname=GatewayQueueSaturated", "severity=warning", "model=m"], "warning"),
        (["alertname=Unknown"], "warning"),
    ],
)
def test_alertmanager_routing(labels: list[str], receiver: str) -> None:
    result = _run(_tool("amtool"), "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels)
    _assert_ok(result)
    assert result.stdout.strip() == receiver


def _load_yaml(path: Path) -> dict[str, Any]:
    with path.open() as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict)
    return data


def _rule_names(kind: str) -> set[str]:
    """The names of the rules of one kind ("alert" or "record") in the shipped rule files."""
    return {
        rule[kind]
        for rules_file in RULE_FILES
        for group in _load_yaml(rules_file)["groups"]
        for rule in group["rules"]
        if kind in rule
    }


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    alerts = _rule_names("alert")
    firing: set[str] = set()
    silent: set[str] = set()
    for test_file in RULE_TEST_FILES:
        for case in _load_yaml(test_file).get("tests", []):
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alerts - firing == set(), "alerts without a firing test"
    assert alerts - silent == set(), "alerts without a test where they stay silent"


def test_every_recording_rule_has_a_unit_test() -> None:
    records = _rule_names("record")
    tested: set[str] = set()
    for test_file in RULE_TEST_FILES:
        for case in _load_yaml(test_file).get("tests", []):
            for check in case.get("promql_expr_test", []):
                # the metric the expression selects: "count(name{...})" -> "name"
                name = check["expr"].split("{")[0].split("(")[-1].strip()
                if check.get("exp_samples") and name in records:
                    tested.add(name)
    assert records - tested == set()
