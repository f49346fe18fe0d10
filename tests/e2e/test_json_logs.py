"""One JSON object per line, from ``gateway serve`` and its model processes alike.

The model processes share the gateway's stdout and stderr; a warning a library prints there while generating (a
deprecation notice from the model's forward pass, say) must come out as a JSON line like every other."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from tests.conftest import ServerProcess


def test_every_line_of_gateway_and_model_processes_is_json(gateway_server: Callable[..., ServerProcess]) -> None:
    server = gateway_server(model_process=True, log_level="info")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(2):
            r = client.post("/generate", json={"inputs": "hello", "parameters": {"max_new_tokens": 4}})
            assert r.status_code == 200, r.text
        r = client.post("/translate", json={"text": "hello", "source_lang": "en", "target_lang": "de"})
        assert r.status_code == 200, r.text
    server.stop(grace_s=10)
    lines = [line for line in server.read_output().splitlines() if line.strip()]
    not_json = []
    for line in lines:
        try:
            assert isinstance(json.loads(line), dict)
        except (ValueError, AssertionError):
            not_json.append(line)
    assert not not_json, "\n".join(not_json[:10])
    loggers = {json.loads(line).get("logger") for line in lines}
    print(f"\n  {len(lines)} lines, loggers: {sorted(str(x) for x in loggers)}")
    assert "gateway.access" in loggers
