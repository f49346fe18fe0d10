"""``/status``, ``/status.json`` and the health gauges on the real app: faults injected through the contract's fault
route move the score and the level, the document and ``/metrics`` agree, and the API-key policy holds.

The breaker's and the window's clock is a ``ManualClock``: recovery is reached by advancing it, never by waiting.
"""

from __future__ import annotations

from typing import Any

import httpx

from gateway.demo import DEMO_SEQ2SEQ_ID
from tests.clock import ManualClock
from tests.conftest import free_port
from tests.serving_helpers import GEN, gen, metrics, sample, set_fault


async def status(client: httpx.AsyncClient, **headers: str) -> dict[str, Any]:
    r = await client.get("/status.json", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    document: dict[str, Any] = r.json()
    return document


def model_of(document: dict[str, Any], model: str = GEN) -> dict[str, Any]:
    (row,) = [m for m in document["models"] if m["model"] == model]
    return row


async def assert_gauges_match(client: httpx.AsyncClient, document: dict[str, Any]) -> None:
    """/metrics says what /status.json says, per model and overall."""
    levels = {"healthy": 0, "warning": 1, "critical": 2}
    m = await metrics(client)
    rows = [(row["model"], row["health"]) for row in document["models"]] + [("overall", document["overall"])]
    for model, health in rows:
        assert sample(m, "gateway_health_score", model=model) == health["score"], model
        assert sample(m, "gateway_health_level", model=model) == levels[health["level"]], model


async def test_faults_move_the_score_and_level_and_recovery_restores_them(app_client: Any) -> None:
    clock = ManualClock()
    settings = {"enable_faults": True, "breaker_failure_threshold": 5, "breaker_recovery_s": 30, "health_window_s": 20}
    async with app_client(clock=clock, **settings) as (client, _app):
        # Fresh: nothing measured yet but healthy gauges.
        fresh = await status(client)
        assert fresh["overall"] == {"score": 100.0, "level": "healthy", "reasons": []}
        row = model_of(fresh)
        assert row["state"] == "ready" and row["breaker"] == "closed" and row["requests"] == 0
        assert row["health"]["components"]["error_ratio"] is None  # absent: no finished request
        assert fresh["alerts"] == {"configured": False, "error": None, "active": []}
        await assert_gauges_match(client, fresh)

        # An error burst under the breaker's thresholds: 2 model errors in 20 requests -> warning, not critical.
        for _ in range(2):
            for _ in range(9):
                assert (await gen(client)).status_code == 200
            await set_fault(client, kind="error", count=1)
            assert (await gen(client)).status_code == 500
        burst = await status(client)
        row = model_of(burst)
        assert row["requests"] == 20 and row["error_ratio"] == 0.1
        assert row["errors_by_type"] == {"model_error": 2}
        assert row["health"]["components"]["error_ratio"] == 0.0 and row["breaker"] == "closed"
        assert row["health"]["level"] == "warning" and 50 <= row["health"]["score"] < 80
        assert burst["overall"]["level"] == "warning" and burst["overall"]["score"] == row["health"]["score"]
        assert model_of(burst, DEMO_SEQ2SEQ_ID)["health"]["score"] == 100.0  # the other model is untouched
        await assert_gauges_match(client, burst)

        # Out-of-memory errors with nothing else running: with the burst's last error, five failures in a row open
        # the breaker: critical, whatever the weighted mean.
        await set_fault(client, kind="oom", count=4)
        for _ in range(4):
            assert (await gen(client)).status_code == 500
        opened = await status(client)
        row = model_of(opened)
        assert row["breaker"] == "open" and row["state"] == "not_ready"
        assert row["errors_by_type"] == {"model_error": 2, "out_of_memory": 4}
        assert row["health"]["level"] == "critical" and row["health"]["score"] <= 49
        assert "breaker" in row["health"]["reasons"]
        assert opened["overall"]["level"] == "critical" and "breaker" in opened["overall"]["reasons"]
        await assert_gauges_match(client, opened)

        # Past the recovery time and the window: the probe succeeds, the breaker closes, the errors age out.
        clock.advance(31)
        assert (await gen(client)).status_code == 200
        recovered = await status(client)
        row = model_of(recovered)
        assert row["breaker"] == "closed" and row["state"] == "ready" and row["requests"] == 1
        assert row["errors_by_type"] == {} and row["error_ratio"] == 0.0
        assert recovered["overall"]["level"] == "healthy" and row["health"]["level"] == "healthy"
        await assert_gauges_match(client, recovered)


async def test_status_json_needs_the_key_and_the_page_does_not(app_client: Any) -> None:
    # Deny by default: the page's shell is open only because the operator listed it among the public routes.
    async with app_client(api_key="s3cret-key", public_routes=["/health", "/ready", "/status"]) as (client, _app):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
            r = await client.get("/status.json", headers=headers)
            assert r.status_code == 401 and r.json()["error_type"] == "unauthorized", headers
        for headers in ({"Authorization": "Bearer s3cret-key"}, {"X-API-Key": "s3cret-key"}):
            document = await status(client, **headers)
            assert {m["model"] for m in document["models"]} == {GEN, DEMO_SEQ2SEQ_ID}

        # The page is a static shell: served without the key, with no data and no key in it, locked to itself.
        page = await client.get("/status")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "s3cret-key" not in page.text and GEN not in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "connect-src 'self'" in page.headers["content-security-policy"]


async def test_unreachable_alertmanager_is_shown_not_a_500(app_client: Any) -> None:
    async with app_client(alertmanager_url=f"http://127.0.0.1:{free_port()}") as (client, _app):
        document = await status(client)
    alerts = document["alerts"]
    assert alerts["configured"] is True and alerts["active"] == []
    assert alerts["error"].startswith("Alertmanager unreachable")
    assert document["overall"]["level"] == "healthy"  # the pager's trouble is not the gateway's
