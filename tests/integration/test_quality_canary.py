"""The synthetic canary in the real app: it runs through the facade on the demo models, passes on their golden
greedy answers, fails under ``degrade``, reports an error when the runner fails, and stays out of the user
request series and the rolling quality score."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.quality.demo_canaries import DEMO_CANARIES
from tests.integration.quality_helpers import GEN, TRANS
from tests.serving_helpers import metrics, sample, set_fault

AppClient = Callable[..., Any]
CHECKS = "gateway_canary_checks_total"


async def checks(client: httpx.AsyncClient, model: str, result: str) -> float:
    return sample(await metrics(client), CHECKS, model=model, result=result)


async def wait_for_checks(client: httpx.AsyncClient, model: str, result: str, at_least: float) -> None:
    """A bounded poll of ``/metrics`` until the canary has reported ``at_least`` such checks."""
    deadline = time.monotonic() + 30.0
    while (seen := await checks(client, model, result)) < at_least:
        assert time.monotonic() < deadline, f"{model} {result}: {seen} checks, wanted {at_least}"
        await asyncio.sleep(0.05)


async def test_demo_canaries_pass_then_fail_under_degrade(app_client: AppClient) -> None:
    async with app_client(enable_faults=True, canary_interval_s=0.1) as (client, _):
        await wait_for_checks(client, GEN, "pass", 2)
        await wait_for_checks(client, TRANS, "pass", 1)
        m = await metrics(client)
        assert sample(m, "gateway_canary_last_success_timestamp_seconds", model=GEN) > 1.7e9
        assert sample(m, "gateway_canary_duration_seconds_count", model=GEN) >= 2
        assert sample(m, CHECKS, model=GEN, result="fail") == 0
        # Canary requests are not user traffic: no request series, no quality assessment.
        assert not [k for k in m if k[0] == "gateway_requests_total"]
        assert not [k for k in m if k[0] == "gateway_output_evaluations_total"]

        await set_fault(client, kind="degrade", ratio=1.0)
        await wait_for_checks(client, GEN, "fail", 2)
        await wait_for_checks(client, TRANS, "fail", 1)
        assert (await client.get("/ready")).status_code == 200
        assert sample(await metrics(client), "gateway_circuit_breaker_state", model=GEN) == 0


async def test_a_failing_runner_is_a_canary_error(app_client: AppClient) -> None:
    async with app_client(enable_faults=True, canary_interval_s=0.1) as (client, _):
        await wait_for_checks(client, GEN, "pass", 1)
        await set_fault(client, kind="error", count=2)
        await wait_for_checks(client, GEN, "error", 1)


async def test_a_canary_file_with_a_reference_translation(app_client: AppClient, tmp_path: Path) -> None:
    golden = next(c for c in DEMO_CANARIES if c.kind == "translate").expect.exact
    path = tmp_path / "canaries.yaml"
    path.write_text(
        f"""
- name: reference
  kind: translate
  text: Good morning
  source_lang: en
  target_lang: de
  max_new_tokens: 12
  expect: {{reference: "{golden}", min_chrf: 90}}
- name: wrong
  prompt: Hello, my name is
  max_new_tokens: 4
  expect: {{regex: "^Paris"}}
"""
    )
    async with app_client(canary_interval_s=0.1, canary_file=path) as (client, _):
        await wait_for_checks(client, TRANS, "pass", 1)
        await wait_for_checks(client, GEN, "fail", 1)
        m = await metrics(client)
        assert sample(m, "gateway_canary_chrf_score", model=TRANS) == 100.0
        assert sample(m, CHECKS, model=GEN, result="pass") == 0
