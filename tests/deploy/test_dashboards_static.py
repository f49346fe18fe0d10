"""Grafana dashboards, Prometheus rules and the runbook, checked against the metric contract without a server.

- every dashboard JSON parses, uses the provisioned datasource and has at least one query per panel;
- every metric name in a dashboard query or a rule expression is in the contract's catalogue (histograms with
  their ``_bucket``/``_sum``/``_count`` series), a recording rule's name, ``up`` or ``gateway_queue_capacity``;
- the model-detail dashboard filters every query by its ``model`` variable;
- every alert links a runbook section that exists, and every alert has the labels and annotations it needs.

The names are read from PromQL with a small tokenizer (strings, label matchers, grouping clauses, ranges and
functions removed); test_stack_e2e.py runs the same queries against the real gateway's metrics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/example/llm-gateway/blob/main/docs/runbook.md"

# The metric catalogue of the public contract (name -> type).
CATALOGUE = {
    "gateway_requests_total": "counter",
    "gateway_request_duration_seconds": "histogram",
    "gateway_queue_wait_seconds": "histogram",
    "gateway_inference_duration_seconds": "histogram",
    "gateway_time_to_first_token_seconds": "histogram",
    "gateway_time_per_output_token_seconds": "histogram",
    "gateway_prompt_tokens_total": "counter",
    "gateway_generated_tokens_total": "counter",
    "gateway_batch_size": "histogram",
    "gateway_queue_depth": "gauge",
    "gateway_requests_in_flight": "gauge",
    "gateway_circuit_breaker_state": "gauge",
    "gateway_circuit_breaker_transitions_total": "counter",
    "gateway_translation_requests_total": "counter",
    "gateway_translation_duration_seconds": "histogram",
    "gateway_gpu_memory_used_bytes": "gauge",
    "gateway_gpu_memory_total_bytes": "gauge",
    "gateway_gpu_utilization_ratio": "gauge",
    "gateway_gpu_temperature_celsius": "gauge",
    "gateway_gpu_power_watts": "gauge",
    "gateway_torch_memory_allocated_bytes": "gauge",
    "gateway_torch_memory_reserved_bytes": "gauge",
    "gateway_model_info": "gauge",
    # the contract's "More metrics"
    "gateway_errors_total": "counter",
    "gateway_health_score": "gauge",
    "gateway_health_level": "gauge",
    "gateway_model_process_resident_memory_bytes": "gauge",
    "gateway_model_process_cpu_seconds_total": "counter",
    "gateway_output_flags_total": "counter",
    "gateway_output_quality_score": "gauge",
    "gateway_translation_length_ratio": "histogram",
    "gateway_canary_checks_total": "counter",
    "gateway_canary_duration_seconds": "histogram",
    "gateway_canary_last_success_timestamp_seconds": "gauge",
}
# Beyond the catalogue: Prometheus's own scrape health, the configured queue size, the workers and the model
# process's threads the gateway exports, the number of evaluated answers (the denominator of the quality flag
# shares), and the node-exporter series of the host layer.
EXTRA = {
    "up",
    "gateway_queue_capacity",
    "gateway_workers_alive",
    "gateway_worker_restarts_total",
    "gateway_model_process_threads",
    "gateway_output_evaluations_total",
    "node_cpu_seconds_total",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemTotal_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
}

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "inf", "nan",
}  # fmt: skip


def _rules() -> list[dict[str, Any]]:
    rules = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


RULES = _rules()
RECORDED = {r["record"] for r in RULES if "record" in r}
ALERTS = [r for r in RULES if "alert" in r]


def allowed_names() -> set[str]:
    names = set(EXTRA) | RECORDED
    for name, kind in CATALOGUE.items():
        names.add(name)
        if kind == "histogram":
            names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values)
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", s)
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    s = re.sub(r"\$\{?\w+\}?", "", s)  # dashboard variables
    names = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        token, call = match.group(1), match.group(2)
        if call or token.lower() in PROMQL_KEYWORDS:
            continue  # a function, or a keyword
        names.add(token)
    return names


def test_metric_names_tokenizer() -> None:
    assert metric_names(
        'sum by (le, model) (rate(gateway_batch_size_bucket{model=~"$model", x="a{b}"}[$__rate_interval]))'
    ) == {"gateway_batch_size_bucket"}
    assert metric_names("a:b:c > 1.2 * d offset 5m and on (job) e unless f") == {"a:b:c", "d", "e", "f"}
    assert metric_names("histogram_quantile(0.95, sum(rate(x_bucket[5m])) ) or vector(0)") == {"x_bucket"}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows
    return out


def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(params=DASHBOARDS, ids=lambda p: p.name)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _load(request.param)


def test_there_are_three_dashboards() -> None:
    assert [p.name for p in DASHBOARDS] == ["gateway-model-detail.json", "gateway-overview.json", "gateway-slo.json"]


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = _panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "bargauge", "table", "gauge", "heatmap"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert (target.get("datasource") or panel["datasource"]) == {"type": "prometheus", "uid": "prometheus"}
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24


def test_rate_windows_use_rate_interval(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            for fn, window in re.findall(r"\b(rate|irate|increase)\([^\[]*\[([^\]]+)\]", target["expr"]):
                allowed = {"$__rate_interval"} if fn != "increase" else {"$__rate_interval", "$__range"}
                assert window in allowed, f"{panel['title']}: {fn}(...[{window}])"


def test_dashboard_metrics_are_in_the_contract(dashboard: dict[str, Any]) -> None:
    allowed = allowed_names()
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            unknown = metric_names(target["expr"]) - allowed
            assert not unknown, f"{panel['title']}: {sorted(unknown)} in {target['expr']}"


def test_rule_metrics_are_in_the_contract() -> None:
    allowed = allowed_names()
    for rule in RULES:
        unknown = metric_names(rule["expr"]) - allowed
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {sorted(unknown)}"


def test_overview_covers_the_operators_questions() -> None:
    exprs = " ".join(
        t["expr"]
        for p in _panels(_load(ROOT / "deploy/grafana/dashboards/gateway-overview.json"))
        for t in p.get("targets", [])
    )
    for name in (
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_time_to_first_token_seconds_bucket",
        "gateway_generated_tokens_total",
        "gateway_queue_depth",
        "gateway_batch_size",
        "gateway_circuit_breaker_state",
        "gateway_gpu_memory_used_bytes",
        "gateway_gpu_memory_total_bytes",
        "gateway_gpu_utilization_ratio",
        "gateway_translation_requests_total",
        "gateway_translation_duration_seconds_bucket",
        "gateway_errors_total",
        "gateway_workers_alive",
        "gateway_worker_restarts_total",
        "gateway_model_process_resident_memory_bytes",
        "gateway_model_process_cpu_seconds_total",
        "gateway_health_score",
        "gateway_health_level",
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_filesystem_avail_bytes",
        "node_network_receive_bytes_total",
        "gateway_output_quality_score",
        "gateway_output_flags_total",
        "gateway_translation_length_ratio_bucket",
        "gateway_canary_checks_total",
        "gateway_canary_duration_seconds_bucket",
        "gateway_canary_last_success_timestamp_seconds",
    ):
        assert name in exprs, name
    for flag in ("truncated", "empty", "repetition", "copy_through", "script_mismatch", "language_mismatch"):
        assert flag in exprs, flag
    assert "source_lang, target_lang" in exprs


def test_slo_dashboard_shows_budget_and_every_burn_window() -> None:
    exprs = [
        t["expr"] for p in _panels(_load(ROOT / "deploy/grafana/dashboards/gateway-slo.json")) for t in p["targets"]
    ]
    assert "job_model_slo:gateway_slo_error_budget_remaining:ratio" in exprs
    settings = yaml.safe_load((ROOT / "deploy/prometheus/slo/slos.yml").read_text())
    windows = {
        w for kind in settings["alerts"].values() for pair in kind["windows"] for w in (pair["long"], pair["short"])
    }
    for window in windows:
        ratio = f"job_model_slo:gateway_slo_errors:ratio_rate{window}"
        burn = f"{ratio} / on (slo) group_left () gateway_slo:error_budget:ratio"
        assert burn in exprs, window


def test_language_pair_heatmap() -> None:
    panels = _panels(_load(ROOT / "deploy/grafana/dashboards/gateway-overview.json"))
    (heatmap,) = [p for p in panels if p["type"] == "heatmap"]
    (target,) = heatmap["targets"]
    assert "gateway_translation_duration_seconds_bucket" in target["expr"]
    assert "by (source_lang, target_lang, le)" in target["expr"]
    assert target["legendFormat"] == "{{source_lang}}→{{target_lang}}"


def test_model_detail_filters_by_model() -> None:
    dashboard = _load(ROOT / "deploy/grafana/dashboards/gateway-model-detail.json")
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "model"
    assert variable["definition"] == "label_values(gateway_model_info, model)"
    assert variable["query"]["query"] == variable["definition"]
    assert variable["includeAll"] and variable["allValue"] == ".*"
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            selectors = re.findall(r"\b([a-zA-Z_:][\w:]*)\{([^}]*)\}", target["expr"])
            bare = metric_names(re.sub(r"\{[^}]*\}", "{}", target["expr"])) - {name for name, _ in selectors}
            assert not bare, f"{panel['title']}: {sorted(bare)} without a model filter"
            for name, matchers in selectors:
                assert 'model=~"$model"' in matchers, f"{panel['title']}: {name}{{{matchers}}}"


# --- alert rules and the runbook --------------------------------------------------------------------------


def _runbook_anchors() -> set[str]:
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))  # GitHub's anchor rule
    return anchors


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a["alert"])
def test_alert_metadata(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in {"critical", "warning"}
    annotations = alert["annotations"]
    assert annotations["summary"]
    assert "$value" in annotations["description"], "the description should carry the measured value"
    assert annotations["runbook"] == f"{RUNBOOK_URL}#{alert['alert'].lower()}"
    assert alert["alert"].lower() in _runbook_anchors(), "no runbook section for this alert"


def test_required_alerts() -> None:
    assert {a["alert"] for a in ALERTS} >= {
        "GatewayDown",
        "GatewayHighErrorRatio",
        "GatewayHighLatencyP95",
        "GatewayTimeToFirstTokenHigh",
        "GatewayQueueSaturated",
        "GatewayRequestsRejected",
        "GatewayCircuitBreakerOpen",
        "GatewayGPUMemoryNearCapacity",
        "GatewayLatencyAnomaly",
    }


def _seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", duration))


def test_fast_alerts_fire_within_a_minute() -> None:
    """The end-to-end test (and on-call) need these within about a minute of the fault."""
    by_name = {a["alert"]: a for a in ALERTS}
    assert _seconds(by_name["GatewayCircuitBreakerOpen"].get("for", "0s")) <= 60
    assert _seconds(by_name["GatewayHighErrorRatio"].get("for", "0s")) <= 60


def test_error_ratio_counts_only_server_errors_and_timeouts() -> None:
    (rule,) = [r for r in RULES if r.get("record") == "job_model:gateway_request_errors:ratio_rate5m"]
    statuses = set(re.findall(r'status=~"([^"]*)"', rule["expr"]))
    assert statuses == {"server_error|timeout"}


def test_every_gateway_alert_keeps_the_job_label() -> None:
    """Alertmanager inhibits gateway alerts while GatewayDown fires with `equal: [job]`."""
    config = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    (down_rule,) = [r for r in config["inhibit_rules"] if 'alertname="GatewayDown"' in r["source_matchers"]]
    assert down_rule["equal"] == ["job"]
    for alert in ALERTS:
        for by in re.findall(r"\bby\s*\(([^)]*)\)", alert["expr"]):
            assert "job" in [label.strip() for label in by.split(",")], alert["alert"]
    for rule in RULES:
        if "record" in rule:
            for by in re.findall(r"\bby\s*\(([^)]*)\)", rule["expr"]):
                assert "job" in [label.strip() for label in by.split(",")], rule["record"]
