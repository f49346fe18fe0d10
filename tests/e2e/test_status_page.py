"""The status page's assets in a real headless Chromium, served with a status document built by gateway.status.

A small loopback HTTP server plays the gateway's two routes (``/status``: the page, ``/status.json``: the
document, behind a Bearer key when one is set); the page's own script fetches, renders and is read back with
``--dump-dom``. The screenshot is kept under pytest's temporary directory (its path is printed).
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gateway.alerts import ActiveAlert
from gateway.http.status_page import status_page_html
from tests.chromium import dump_dom, screenshot
from tests.e2e.test_status import sample_status


class Server:
    def __init__(self, document: Callable[[], dict[str, Any]], key: str | None) -> None:
        page = status_page_html().encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/status":
                    self._send(200, "text/html; charset=utf-8", page)
                elif self.path == "/status.json":
                    if key is not None and self.headers.get("Authorization") != f"Bearer {key}":
                        self._send(401, "application/json", b'{"error_type": "unauthorized"}')
                    else:
                        self._send(200, "application/json", json.dumps(document()).encode())
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(document: Callable[[], dict[str, Any]], key: str | None = None) -> Server:
        servers.append(Server(document, key))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def text_of(dom: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def field(dom: str, name: str) -> str:
    match = re.search(rf'<tr data-field="{name}">(.*?)</tr>', dom, re.S)
    assert match, f"no {name} row"
    return text_of(match.group(1)).strip()


def test_the_page_has_no_external_resources() -> None:
    page = status_page_html()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    assert "innerHTML" not in page  # everything from the document goes in as text


def test_page_renders_each_model_and_figure(
    serve: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory
) -> None:
    alerts = [ActiveAlert("GatewayHighErrorRatio", "critical", "gen", "High error ratio for model gen", "t")]
    server = serve(lambda: sample_status(alerts=alerts))
    dom = dump_dom(server.url + "/status")
    assert 'data-loaded="1"' in dom
    assert re.search(r'id="overall-level" class="badge healthy">healthy<', dom)
    assert '<strong id="overall-score">100</strong>' in dom
    assert "1h 2m 5s" in text_of(dom) and "1.2.3" in dom
    assert 'data-model="gen"' in dom
    assert field(dom, "state") == "state ready (text-generation, cuda:0)"
    assert field(dom, "breaker") == "circuit breaker closed"
    assert field(dom, "queue") == "queue 3 / 64"
    assert field(dom, "in_flight") == "in flight 5"
    assert field(dom, "throughput") == "throughput 0.33 req/s"
    assert field(dom, "latency") == "latency p50 / p95 250 ms / 250 ms"
    assert field(dom, "ttft") == "time to first token p95 50 ms"
    assert field(dom, "tpot") == "time per output token p95 20 ms"
    assert field(dom, "quality") == "quality score not measured"
    assert field(dom, "canary") == "canary off"
    assert field(dom, "gpu_memory") == "GPU memory 3.73 GiB / 7.45 GiB"
    assert field(dom, "errors_by_type") == "errors by type none"
    assert "GatewayHighErrorRatio [critical] gen: High error ratio for model gen" in text_of(dom)
    path = screenshot(server.url + "/status", tmp_path_factory.mktemp("status-page") / "status.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_faults_show_on_the_page(serve: Callable[..., Server]) -> None:
    server = serve(lambda: sample_status(breaker=2, errors=20))
    dom = dump_dom(server.url + "/status")
    assert re.search(r'id="overall-level" class="badge critical">critical<', dom)
    assert field(dom, "breaker") == "circuit breaker open"
    assert field(dom, "errors_by_type") == "errors by type out_of_memory 20"
    assert field(dom, "error_ratio") == "error ratio 50.0% of 40"
    assert field(dom, "reasons") == "critical because error_ratio, breaker"


def test_with_an_api_key(serve: Callable[..., Server], tmp_path: Path) -> None:
    server = serve(lambda: sample_status(), key="s3cret")
    without = dump_dom(server.url + "/status")
    assert 'data-loaded="error"' in without and "an API key is required" in without
    assert re.search(r'<form id="key-form">', without), "the key form is shown"
    with_key = dump_dom(server.url + "/status#key=s3cret")
    assert 'data-loaded="1"' in with_key and 'data-model="gen"' in with_key
    assert "s3cret" not in with_key  # the key left the address bar and is not in the page
