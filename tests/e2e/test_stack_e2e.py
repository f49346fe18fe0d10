"""The operators' stack end to end, with real processes on loopback: gateway -> Prometheus -> Alertmanager -> webhook.

The module starts
- the real gateway (``python -m gateway serve``, built-in demo models, ``GATEWAY_ENABLE_FAULTS=true``),
- a real ``prometheus`` with the shipped deploy/prometheus/prometheus.yml (targets and ports substituted, scrape
  and evaluation intervals shortened to 1 s) and the shipped rule files, copied unchanged,
- a real ``alertmanager`` with the shipped deploy/alertmanager/alertmanager.yml (webhook URL pointed at this test,
  group_wait/group_interval shortened),
- the shipped webhook receiver (deploy/alert-webhook/receiver.py), in a thread, recording what it gets,
- a real node-exporter (Debian: ``prometheus-node-exporter``) for the host layer's panels and rules,

all on 127.0.0.1 with free ports and storage in a temporary directory, and drives real traffic. Then:
1. every Grafana panel query (``$model`` -> ``.*``, ``$__rate_interval`` -> ``1m``, ``$__range`` -> ``5m``) is valid
   PromQL and returns data; the only panels allowed to be empty are the GPU ones, and only because no GPU/torch
   device-memory series exist (this machine has no GPU);
2. every rule evaluates without error, and every metric the rules read exists in the real exposition;
3. injected model errors (``POST /admin/faults``) make the requests fail (500, then 503 once the breaker opens)
   and GatewayCircuitBreakerOpen, GatewayHighErrorRatio and the availability SLO's fast-burn page
   (GatewayAvailabilityFastBurn) reach the webhook as firing, within a bounded time;
4. an injected ``degrade`` fault (answers 200 with nothing) brings GatewayOutputQualityLow to the webhook as
   firing while the breaker stays closed and ``/ready`` 200. The gateway runs its canary every second (a
   generation case only, so that the error faults above touch one model), so the canary panels and rules have
   data too.

Needs ``prometheus``, ``alertmanager`` (Debian: ``prometheus-alertmanager``) and node-exporter on PATH: skipped
without them, failed without them when ``CI`` is set. Every wait is bounded.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

httpx = pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
LOOPBACK = "127.0.0.1"

# Panels over these metrics are the only ones allowed to be empty, and only while none of them has a series:
# NVML's GPU gauges and torch's CUDA allocator gauges exist only on a machine with a GPU.
DEVICE_METRIC_PREFIXES = ("gateway_gpu_", "gateway_torch_memory_")

# The alerts the injected faults must fire, and the longest wait for them after the first fault.
FAULT_ALERTS = {"GatewayCircuitBreakerOpen", "GatewayHighErrorRatio", "GatewayAvailabilityFastBurn"}
QUALITY_ALERT = "GatewayOutputQualityLow"
ALERT_DEADLINE_S = 150.0
BREAKER_FAILURES = 20  # consecutive failures that open the stack gateway's breaker (see the fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


# --- helpers ------------------------------------------------------------------------------------------


def _binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    message = f"none of {names} on PATH (apt-get install prometheus prometheus-alertmanager)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_until(what: str, check: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (same tokenizer as test_dashboards_static.py)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", "", s)
    keywords = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
    return {
        m.group(1)
        for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s)
        if not m.group(2) and m.group(1).lower() not in keywords | {"inf", "nan"}
    }


def _panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr with Grafana's variables substituted) for every panel target."""
    out = []
    for path in DASHBOARDS:
        panels = json.loads(path.read_text())["panels"]
        for panel in panels + [child for row in panels for child in row.get("panels", [])]:
            for target in panel.get("targets", []):
                expr = (
                    target["expr"]
                    .replace("$__rate_interval", "1m")
                    .replace("$__range", "5m")
                    .replace("$__interval", "1s")
                    .replace("${model}", ".*")
                    .replace("$model", ".*")
                )
                assert "$" not in expr, f"unsubstituted variable in {expr}"
                out.append((path.name, panel["title"], expr))
    return out


@dataclass
class Webhook:
    """Collects what Alertmanager posts to the shipped receiver."""

    payloads: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sink(self, payload: dict[str, Any]) -> None:
        with self.lock:
            self.payloads.append(payload)

    def firing(self) -> set[str]:
        with self.lock:
            return {
                alert["labels"]["alertname"]
                for payload in self.payloads
                for alert in payload.get("alerts", [])
                if alert.get("status") == "firing"
            }


@dataclass
class Stack:
    gateway: str
    prometheus: str
    alertmanager: str
    webhook: Webhook
    logs: dict[str, Path]
    client: Any  # httpx.Client

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; fails the test on a PromQL error."""
        response = self.client.get(f"{self.prometheus}/api/v1/query", params={"query": expr})
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body.get('errorType')}: {body.get('error')}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def series_count(self, metric: str) -> int:
        response = self.client.get(f"{self.prometheus}/api/v1/series", params={"match[]": metric})
        return len(response.json()["data"])

    def diagnostics(self) -> str:
        parts = []
        for name, path in self.logs.items():
            parts.append(f"--- {name} log (tail) ---\n{_tail(path)}")
        try:
            alerts = self.client.get(f"{self.prometheus}/api/v1/alerts").json()["data"]["alerts"]
            parts.append("--- prometheus alerts ---\n" + json.dumps(alerts, indent=1)[:4000])
        except Exception as exc:  # diagnostics must not hide the real failure
            parts.append(f"(no alerts from prometheus: {exc})")
        parts.append("--- webhook payloads ---\n" + json.dumps(self.webhook.payloads, indent=1)[:4000])
        return "\n".join(parts)

    def generate(self, max_new_tokens: int = 4) -> Any:
        return self.client.post(
            f"{self.gateway}/generate", json={"inputs": "hello", "parameters": {"max_new_tokens": max_new_tokens}}
        )

    def generate_stream(self) -> Any:
        with self.client.stream(
            "POST", f"{self.gateway}/generate_stream", json={"inputs": "hello", "parameters": {"max_new_tokens": 4}}
        ) as response:
            response.read()
            return response

    def translate(self, source: str = "en", target: str = "de") -> Any:
        return self.client.post(
            f"{self.gateway}/translate", json={"text": "hello", "source_lang": source, "target_lang": target}
        )


def _prometheus_config(ports: dict[str, int]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    alertmanager_port = ports["alertmanager"]
    targets = {job: f"{LOOPBACK}:{ports[job]}" for job in ("gateway", "prometheus", "node")}
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
    for job in config["scrape_configs"]:
        for key in ("scrape_interval", "scrape_timeout"):
            job.pop(key, None)
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    alertmanagers["static_configs"] = [{"targets": [f"{LOOPBACK}:{alertmanager_port}"]}]
    return config


def _alertmanager_config(webhook_url: str) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route or route is config["route"]:
                route[key] = "1s"
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    urls = 0
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = webhook_url
            urls += 1
    assert urls, "the shipped Alertmanager config has no webhook receiver"
    return config


def _start(name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _ok(client: Any, url: str) -> bool:
    try:
        return bool(client.get(url).status_code == 200)
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if importlib.util.find_spec("gateway") is None:
        pytest.skip("the gateway package is not installed")
    prometheus_bin = _binary("prometheus")
    alertmanager_bin = _binary("alertmanager", "prometheus-alertmanager")

    tmp = tmp_path_factory.mktemp("stack")
    node_exporter_bin = _binary("prometheus-node-exporter", "node_exporter")
    ports = {name: _free_port() for name in ("gateway", "prometheus", "alertmanager", "webhook", "node")}
    logs = {name: tmp / f"{name}.log" for name in ("gateway", "prometheus", "alertmanager", "node")}
    processes: list[subprocess.Popen[bytes]] = []

    # the shipped webhook receiver, in-process
    spec = importlib.util.spec_from_file_location("alert_webhook_receiver", DEPLOY / "alert-webhook" / "receiver.py")
    assert spec and spec.loader
    receiver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(receiver)
    webhook = Webhook()
    server = receiver.make_server(LOOPBACK, ports["webhook"], webhook.sink)
    receiver.serve_in_thread(server)

    client = httpx.Client(timeout=30.0)
    stack = Stack(
        gateway=f"http://{LOOPBACK}:{ports['gateway']}",
        prometheus=f"http://{LOOPBACK}:{ports['prometheus']}",
        alertmanager=f"http://{LOOPBACK}:{ports['alertmanager']}",
        webhook=webhook,
        logs=logs,
        client=client,
    )
    try:
        # gateway: demo models, faults enabled; no inherited GATEWAY_* setting may change that
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(GATEWAY_ENABLE_FAULTS="true", GATEWAY_DEVICE="cpu", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        # the canary every second, on the demo generation model's golden answer only: the error faults below
        # must open one breaker, not the translation model's too
        from gateway.quality.demo_canaries import DEMO_CANARIES

        golden = next(c for c in DEMO_CANARIES if c.kind == "generate")
        canary_file = tmp / "canaries.yaml"
        canary_file.write_text(
            yaml.safe_dump(
                [{"name": golden.name, "prompt": golden.text, "max_new_tokens": golden.max_new_tokens,
                  "expect": {"exact": golden.expect.exact}}]
            )
        )  # fmt: skip
        env.update(GATEWAY_CANARY_INTERVAL_S="1", GATEWAY_CANARY_FILE=str(canary_file))
        # The breaker opens after BREAKER_FAILURES failures in a row (by default 5, or half the last 20 outcomes):
        # the canary's failures count for the breaker but not in gateway_requests_total, so with the default the
        # test's own errors over the warm-up's traffic can leave the 5-minute error ratio at the 5% threshold.
        # With more, the errors the test causes are well above every threshold whatever share the canary takes.
        env.update(GATEWAY_BREAKER_FAILURE_THRESHOLD=str(BREAKER_FAILURES), GATEWAY_BREAKER_FAILURE_RATIO="1.0")
        gateway_args = [sys.executable, "-m", "gateway", "serve", "--host", LOOPBACK, "--port", str(ports["gateway"])]
        processes.append(_start("gateway", gateway_args, logs["gateway"], env))

        # alertmanager: the shipped config, webhook pointed here, waits shortened
        am_dir = tmp / "alertmanager"
        am_dir.mkdir()
        am_config = am_dir / "alertmanager.yml"
        webhook_url = f"http://{LOOPBACK}:{ports['webhook']}/alerts"
        am_config.write_text(yaml.safe_dump(_alertmanager_config(webhook_url), sort_keys=False))
        am_args = [
            alertmanager_bin,
            f"--config.file={am_config}",
            f"--storage.path={am_dir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{ports['alertmanager']}",
            "--cluster.listen-address=",
        ]
        processes.append(_start("alertmanager", am_args, logs["alertmanager"]))

        # prometheus: the shipped config with loopback targets and 1 s intervals, the rule files unchanged
        prom_dir = tmp / "prometheus"
        shutil.copytree(DEPLOY / "prometheus" / "rules", prom_dir / "rules")
        prom_config = prom_dir / "prometheus.yml"
        prom_config.write_text(yaml.safe_dump(_prometheus_config(ports), sort_keys=False))
        for shipped in (DEPLOY / "prometheus" / "rules").glob("*.yml"):
            assert (prom_dir / "rules" / shipped.name).read_bytes() == shipped.read_bytes()
        prom_args = [
            prometheus_bin,
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={prom_dir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{ports['prometheus']}",
        ]
        processes.append(_start("prometheus", prom_args, logs["prometheus"]))

        node_args = [node_exporter_bin, f"--web.listen-address={LOOPBACK}:{ports['node']}"]
        processes.append(_start("node", node_args, logs["node"]))

        def all_ready() -> bool:
            for process, name in zip(processes, ("gateway", "alertmanager", "prometheus", "node"), strict=True):
                if process.poll() is not None:
                    raise AssertionError(f"{name} exited with {process.returncode}\n{_tail(logs[name])}")
            return (
                _ok(client, f"{stack.gateway}/ready")
                and _ok(client, f"{stack.alertmanager}/-/ready")
                and _ok(client, f"{stack.prometheus}/-/ready")
                and _ok(client, f"http://{LOOPBACK}:{ports['node']}/metrics")
            )

        try:
            _wait_until("gateway, prometheus and alertmanager to be ready", all_ready, timeout_s=180)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.diagnostics()}") from None

        # rules loaded, alertmanager discovered
        rule_groups = client.get(f"{stack.prometheus}/api/v1/rules").json()["data"]["groups"]
        assert {g["name"] for g in rule_groups} == {
            "gateway-recording",
            "gateway-alerts",
            "gateway-slo-recording",
            "gateway-slo-alerts",
            "gateway-quality-recording",
            "gateway-quality-alerts",
        }
        _wait_until(
            "prometheus to discover alertmanager",
            lambda: bool(client.get(f"{stack.prometheus}/api/v1/alertmanagers").json()["data"]["activeAlertmanagers"]),
            timeout_s=30,
        )

        # warm-up traffic, spread over several scrapes so that every counter has increases in its rate window
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert stack.generate().status_code == 200
            assert stack.generate_stream().status_code == 200
            assert stack.translate("en", "de").status_code == 200
            assert stack.translate("en", "fr").status_code == 200
            assert stack.translate("en", "zh").status_code == 200  # the demo model answers in Latin letters
            # a bad request: an error type for the error panels (never a server error)
            bad = stack.client.post(f"{stack.gateway}/generate", json={"inputs": "x", "parameters": {"top_p": 7}})
            assert bad.status_code == 422
            time.sleep(0.5)

        yield stack
    finally:
        client.close()
        server.shutdown()
        server.server_close()
        _stop(processes)


# --- tests --------------------------------------------------------------------------------------------


def _is_device_panel(expr: str) -> bool:
    names = _metric_names(expr)
    return bool(names) and all(name.startswith(DEVICE_METRIC_PREFIXES) for name in names)


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    queries = _panel_queries()
    assert len(queries) > 40
    for _, _, expr in queries:
        stack.query(expr)  # valid PromQL, at once

    def empty() -> list[tuple[str, str, str]]:
        return [q for q in queries if not stack.query(q[2])]

    missing: list[tuple[str, str, str]] = []

    def only_device_panels_empty() -> bool:
        nonlocal missing
        missing = empty()
        return all(_is_device_panel(expr) for _, _, expr in missing)

    try:
        _wait_until("every non-GPU panel to have data", only_device_panels_empty, timeout_s=60, interval_s=2)
    except AssertionError:
        lines = [f"{d} / {title}: {expr}" for d, title, expr in missing if not _is_device_panel(expr)]
        raise AssertionError("panels without data:\n" + "\n".join(lines) + "\n" + stack.diagnostics()) from None

    # The empty ones are empty because this machine exports no GPU series at all, not because a query is wrong.
    for _, title, expr in missing:
        for name in _metric_names(expr):
            assert stack.series_count(name) == 0, f"{title}: {name} has series but the panel is empty"


def test_rules_evaluate_and_read_real_metrics(stack: Stack) -> None:
    groups = stack.client.get(f"{stack.prometheus}/api/v1/rules").json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    shipped = [
        rule
        for path in (DEPLOY / "prometheus" / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]
    assert len(rules) == len(shipped)
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"

    recorded = {rule["name"] for rule in rules if rule["type"] == "recording"}
    read = set().union(*(_metric_names(rule["query"]) for rule in rules)) - recorded
    for name in sorted(read):
        if name.startswith(DEVICE_METRIC_PREFIXES):
            continue
        assert stack.series_count(name) > 0, f"the rules read {name}, which the gateway does not export"
    # and the recording rules produce series from the real traffic
    for name in (
        "job_route_status_model:gateway_requests:rate5m",
        "job_model:gateway_request_errors:ratio_rate5m",
        "job_route_model:gateway_request_duration_seconds:p95_5m",
        "job_model:gateway_time_to_first_token_seconds:p95_5m",
        "job_model:gateway_queue_utilization:ratio",
        "job_route_model:gateway_request_duration_seconds:p95_5m_avg_1h",
        "job_model_slo:gateway_slo_errors:ratio_rate5m",
        "job_model_slo:gateway_slo_errors:ratio_rate3d",
        "job_model_slo:gateway_slo_error_budget_remaining:ratio",
    ):
        result = stack.query(name)
        assert result, name
        assert all(math.isfinite(float(sample["value"][1])) for sample in result), (name, result)


def test_injected_errors_fire_breaker_and_error_ratio_alerts(stack: Stack) -> None:
    assert not stack.webhook.firing() & FAULT_ALERTS, "alerts fired before any fault"
    generation_model = stack.client.get(f"{stack.gateway}/info").json()["model_id"]
    response = stack.client.post(f"{stack.gateway}/admin/faults", json={"kind": "error", "ratio": 1.0})
    assert response.status_code < 300, response.text
    started = time.monotonic()
    try:
        # The first failure creates the server_error series. Let Prometheus scrape it before the next failures,
        # so that they count as an increase in rate() (a series that is born at 5 shows no increase at all).
        assert stack.generate().status_code == 500
        _wait_until(
            "prometheus to scrape the first server_error",
            lambda: bool(stack.query('gateway_requests_total{job="gateway",status="server_error"}')),
            timeout_s=15,
        )
        statuses = []
        for _ in range(3 * BREAKER_FAILURES):
            statuses.append(stack.generate().status_code)
            if statuses[-1] == 503:
                break
            time.sleep(0.1)
        assert statuses[-1] == 503, f"the breaker never opened: {statuses}"
        assert set(statuses[:-1]) == {500}, statuses
        assert stack.generate().status_code == 503

        def alerts_fired() -> bool:
            return FAULT_ALERTS <= stack.webhook.firing()

        remaining = ALERT_DEADLINE_S - (time.monotonic() - started)
        try:
            _wait_until(f"{sorted(FAULT_ALERTS)} at the webhook", alerts_fired, timeout_s=remaining, interval_s=1)
        except AssertionError as exc:
            ratio = stack.query("job_model:gateway_request_errors:ratio_rate5m")
            counts = stack.query('sum by (model, status) (gateway_requests_total{job="gateway"})')
            raise AssertionError(
                f"{exc}\nstatuses: {statuses}\nerror ratio: {ratio}\nrequests: {counts}\n{stack.diagnostics()}"
            ) from None

        # the notifications carry what the on-call needs
        for payload in stack.webhook.payloads:
            for alert in payload["alerts"]:
                if alert["labels"]["alertname"] in FAULT_ALERTS:
                    assert alert["labels"]["severity"] == "critical"
                    assert alert["labels"]["model"] == generation_model
                    assert alert["annotations"]["runbook"].endswith("#" + alert["labels"]["alertname"].lower())
                    assert payload["receiver"] == "critical"
    finally:
        stack.client.delete(f"{stack.gateway}/admin/faults")


def test_degraded_answers_fire_the_quality_alert_and_never_the_breaker(stack: Stack) -> None:
    assert QUALITY_ALERT not in stack.webhook.firing(), "the quality alert fired before any fault"
    generation_model = stack.client.get(f"{stack.gateway}/info").json()["model_id"]
    # An earlier test may have opened the breaker: wait until the model answers again (its recovery period).
    _wait_until("the generation model to answer", lambda: stack.generate().status_code == 200, timeout_s=120)
    opened = stack.query(f'gateway_circuit_breaker_transitions_total{{model="{generation_model}",to_state="open"}}')
    opened_before = float(opened[0]["value"][1]) if opened else 0.0
    response = stack.client.post(
        f"{stack.gateway}/admin/faults", json={"kind": "degrade", "ratio": 1.0, "output": "empty"}
    )
    assert response.status_code < 300, response.text
    started = time.monotonic()
    try:
        # Empty answers score 0: enough of them pull the rolling mean of the last 100 answers under 0.7.
        for _ in range(60):
            answer = stack.generate(max_new_tokens=8)
            assert answer.status_code == 200 and answer.json()["generated_text"] == "", answer.text
        remaining = ALERT_DEADLINE_S - (time.monotonic() - started)
        try:
            _wait_until(
                f"{QUALITY_ALERT} at the webhook",
                lambda: QUALITY_ALERT in stack.webhook.firing(),
                timeout_s=remaining,
                interval_s=1,
            )
        except AssertionError as exc:
            score = stack.query("gateway_output_quality_score")
            raise AssertionError(f"{exc}\nscore: {score}\n{stack.diagnostics()}") from None
        alerts = [a for p in stack.webhook.payloads for a in p["alerts"] if a["labels"]["alertname"] == QUALITY_ALERT]
        assert {a["labels"]["model"] for a in alerts} == {generation_model}
        assert all(a["labels"]["severity"] == "warning" for a in alerts)
        # Quality only warns: the breaker stayed closed and the gateway ready all along.
        assert stack.client.get(f"{stack.gateway}/ready").status_code == 200
        assert not stack.query(f'gateway_circuit_breaker_state{{model="{generation_model}"}} > 0')
        opened = stack.query(f'gateway_circuit_breaker_transitions_total{{model="{generation_model}",to_state="open"}}')
        assert (float(opened[0]["value"][1]) if opened else 0.0) == opened_before
    finally:
        stack.client.delete(f"{stack.gateway}/admin/faults")
