"""``/status`` of a running ``gateway serve`` in headless Chromium: each model and its figures, an injected fault,
an alert read from a real Alertmanager, and the API key given in the page's ``#key=`` fragment.

The screenshots are kept under ``.pytest_cache/artifacts/`` in the repository (their paths are printed).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.gateway_process import ServerProcess
from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID
from tests.chromium import dump_dom, screenshot
from tests.conftest import ROOT
from tests.e2e.test_status_page import field, text_of

ARTIFACTS = ROOT / ".pytest_cache" / "artifacts"
MODELS = (DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID)


def card(dom: str, model: str) -> str:
    """The rendered card of one model."""
    match = re.search(rf'<article class="card" data-model="{re.escape(model)}">(.*?)</article>', dom, re.S)
    assert match, f"no card for {model}"
    return match.group(1)


def fire_alert(alertmanager: str, model: str) -> None:
    alert = {
        "labels": {"alertname": "GatewayCircuitBreakerOpen", "severity": "critical", "model": model},
        "annotations": {"summary": f"Circuit breaker open for model {model}"},
    }
    request = urllib.request.Request(
        alertmanager + "/api/v2/alerts",
        data=json.dumps([alert]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=5).close()


def shot(server: ServerProcess, url: str, name: str) -> Path:
    path = screenshot(server.url + url, ARTIFACTS / name)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def test_status_page_of_a_running_gateway(gateway_server: Callable[..., ServerProcess], alertmanager: str) -> None:
    fire_alert(alertmanager, DEMO_CAUSAL_ID)
    server = gateway_server(
        enable_faults=True, alertmanager_url=alertmanager, max_queue=64, breaker_failure_threshold=1
    )
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(3):
            assert client.post("/generate", json={"inputs": "hello", "parameters": {"max_new_tokens": 4}}).is_success
        r = client.post("/translate", json={"text": "hello", "source_lang": "en", "target_lang": "de"})
        assert r.status_code == 200, r.text
        # An out-of-memory error reaches the breaker's threshold of 1: it opens and the model turns critical.
        assert client.post("/admin/faults", json={"kind": "oom", "count": 1}).status_code == 200
        assert client.post("/generate", json={"inputs": "hello"}).status_code == 500
        document: dict[str, Any] = client.get("/status.json").json()

    dom = dump_dom(server.url + "/status")
    assert 'data-loaded="1"' in dom, text_of(dom)
    assert re.search(r'id="overall-level" class="badge critical">critical<', dom)
    assert f'<strong id="overall-score">{document["overall"]["score"]:g}</strong>' in dom
    for model in MODELS:
        assert field(card(dom, model), "queue") == "queue 0 / 64"
        assert field(card(dom, model), "in_flight") == "in flight 0"
        assert field(card(dom, model), "workers_alive") == "workers alive 1"
    gen, trans = card(dom, DEMO_CAUSAL_ID), card(dom, DEMO_SEQ2SEQ_ID)
    assert re.search(r'class="badge critical">critical 4\d(\.\d)?<', gen)
    assert field(gen, "breaker") == "circuit breaker open"
    assert field(gen, "state").startswith("state not_ready (text-generation")
    assert field(gen, "error_ratio") == "error ratio 25.0% of 4"
    assert field(gen, "errors_by_type") == "errors by type out_of_memory 1"
    assert field(gen, "reasons") == "critical because error_ratio, breaker"
    gpu = next(m for m in document["models"] if m["model"] == DEMO_CAUSAL_ID)["gpu_memory"]
    assert re.fullmatch(r"GPU memory (no GPU|[\d.]+ GiB / [\d.]+ GiB)", field(gen, "gpu_memory"))
    assert (gpu is None) == (field(gen, "gpu_memory") == "GPU memory no GPU")
    assert re.fullmatch(r"latency p50 / p95 \d+(\.\d+)? ms / \d+(\.\d+)? ms", field(gen, "latency"))
    assert re.fullmatch(r"time to first token p95 \d+(\.\d+)? ms", field(gen, "ttft"))
    assert 'class="badge healthy">healthy 100<' in trans
    assert field(trans, "breaker") == "circuit breaker closed"
    assert field(trans, "state").startswith("state ready (")
    assert field(trans, "error_ratio") == "error ratio 0.0% of 1"
    summary = f"GatewayCircuitBreakerOpen [critical] {DEMO_CAUSAL_ID}: Circuit breaker open for model {DEMO_CAUSAL_ID}"
    assert summary in text_of(dom)
    shot(server, "/status", "status-page-live.png")


def test_status_page_with_an_api_key(gateway_server: Callable[..., ServerProcess]) -> None:
    key = "e2e-status-key"
    server = gateway_server(api_key=key, public_routes="/health,/ready,/status")
    assert httpx.get(server.url + "/status.json", timeout=10).status_code == 401

    without = dump_dom(server.url + "/status")
    assert 'data-loaded="error"' in without and "an API key is required" in without
    assert '<form id="key-form">' in without  # shown (no longer hidden)
    assert "data-model=" not in without

    with_key = dump_dom(server.url + f"/status#key={key}")
    assert 'data-loaded="1"' in with_key, text_of(with_key)
    for model in MODELS:
        assert field(card(with_key, model), "breaker") == "circuit breaker closed"
    assert re.search(r'id="overall-level" class="badge healthy">healthy<', with_key)
    assert "Alertmanager not configured" in text_of(with_key)
    assert key not in with_key  # the key left the address bar and is not in the page
    shot(server, f"/status#key={key}", "status-page-live-key.png")
