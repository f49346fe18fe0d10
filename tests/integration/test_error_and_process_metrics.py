"""gateway_errors_total and the model-process gauges on the real app, with faults caused in the real runner."""

from __future__ import annotations

import os

from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID
from tests.serving_helpers import gen, metrics, sample, set_fault, settle

GEN = DEMO_CAUSAL_ID
TRANS = DEMO_SEQ2SEQ_ID


async def test_errors_by_type_after_real_faults(app_client):
    async with app_client(enable_faults=True, breaker_failure_threshold=1) as (client, app):
        assert (await gen(client)).status_code == 200
        await set_fault(client, kind="oom", count=1)
        r = await gen(client)
        assert r.status_code == 500 and r.json()["error_type"] == "out_of_memory"
        r = await gen(client)  # the out-of-memory error reached the threshold of 1: the breaker is open
        assert r.status_code == 503 and r.json()["error_type"] == "circuit_open"
        bad = await client.post("/generate", json={"inputs": "x", "parameters": {"top_p": 7}})
        assert bad.status_code == 422
        await settle(app)
        m = await metrics(client)
    assert sample(m, "gateway_errors_total", model=GEN, error_type="out_of_memory") == 1
    assert sample(m, "gateway_errors_total", model=GEN, error_type="circuit_open") == 1
    assert sample(m, "gateway_errors_total", model=GEN, error_type="validation") == 1
    errors = {labels: v for (name, labels), v in m.items() if name == "gateway_errors_total"}
    assert sum(errors.values()) == 3, errors


async def test_model_process_memory_cpu_and_threads(app_client):
    async with app_client(model_process=True) as (client, app):
        assert (await gen(client, max_new_tokens=4)).status_code == 200
        m = await metrics(client)
        pids = app.gateway.model_pids()
    assert set(pids) == {GEN, TRANS}
    assert all(pid and pid != os.getpid() for pid in pids.values())
    for model in (GEN, TRANS):
        # a process that imported torch and holds a model: tens of MiB at the very least
        assert sample(m, "gateway_model_process_resident_memory_bytes", model=model) > 50 * 2**20
        assert sample(m, "gateway_model_process_cpu_seconds_total", model=model) > 0
        assert sample(m, "gateway_model_process_threads", model=model) >= 1


async def test_thread_mode_reports_the_gateway_process(app_client):
    async with app_client(model_process=False) as (client, app):
        m = await metrics(client)
        assert app.gateway.model_pids() == {GEN: os.getpid(), TRANS: os.getpid()}
    assert sample(m, "gateway_model_process_resident_memory_bytes", model=GEN) > 0
