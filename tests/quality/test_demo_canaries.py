"""The built-in demo canaries through the real app: their golden greedy answers still hold, a degraded runner
fails them and a failing runner is an error; results go through the real Prometheus recorder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from tests.quality.quality_helpers import GEN, TRANS, canary_sender
from tests.serving_helpers import metrics, parse_metrics, sample, set_fault

from gateway.quality.canary_runner import CanaryRunner
from gateway.quality.demo_canaries import DEMO_CANARIES
from metrics import Instruments, PrometheusRecorder

AppClient = Callable[..., Any]


def recorder() -> tuple[PrometheusRecorder, CollectorRegistry]:
    registry = CollectorRegistry()
    return PrometheusRecorder(Instruments(registry), models=[GEN, TRANS], languages=["en", "de"]), registry


def exposed(registry: CollectorRegistry) -> Any:
    from prometheus_client import generate_latest

    return parse_metrics(generate_latest(registry).decode())


async def test_demo_canaries_pass_then_fail_under_degrade(app_client: AppClient) -> None:
    sink, registry = recorder()
    async with app_client(enable_faults=True) as (client, _):
        runner = CanaryRunner(DEMO_CANARIES, canary_sender(client), sink, interval_s=60)
        records = await runner.run_once()
        assert [(r.case, r.result) for r in records] == [(c.name, "pass") for c in DEMO_CANARIES], records
        m = exposed(registry)
        assert sample(m, "gateway_canary_checks_total", model=GEN, result="pass") == 2
        assert sample(m, "gateway_canary_checks_total", model=TRANS, result="pass") == 1
        assert sample(m, "gateway_canary_last_success_timestamp_seconds", model=GEN) > 1.7e9

        await set_fault(client, kind="degrade", ratio=1.0)
        records = await runner.run_once()
        assert [r.result for r in records] == ["fail"] * len(DEMO_CANARIES), records
        assert sample(exposed(registry), "gateway_canary_checks_total", model=GEN, result="fail") == 2
        # Quality never moves the breaker or readiness.
        assert (await client.get("/ready")).status_code == 200
        assert sample(await metrics(client), "gateway_circuit_breaker_state", model=GEN) == 0


async def test_a_failing_runner_is_a_canary_error(app_client: AppClient) -> None:
    sink, registry = recorder()
    async with app_client(enable_faults=True) as (client, _):
        await set_fault(client, kind="error", count=1)
        runner = CanaryRunner(DEMO_CANARIES[:1], canary_sender(client), sink, interval_s=60)
        (record,) = await runner.run_once()
        assert record.result == "error" and "500" in record.reason
        assert sample(exposed(registry), "gateway_canary_checks_total", model=GEN, result="error") == 1
