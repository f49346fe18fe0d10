"""StatusBoard: the health gauges and the status document from the same reading; on the real app's engine, an
injected fault that opens the breaker turns the model and the whole gateway critical."""

from __future__ import annotations

from gateway.demo import DEMO_CAUSAL_ID, DEMO_SEQ2SEQ_ID
from gateway.health import RequestWindow
from gateway.stats import GaugeSnapshot, RequestRecord
from gateway.status_board import StatusBoard
from gateway.types import ModelInfo
from tests.serving_helpers import gen, set_fault


def test_gauges_and_document_agree() -> None:
    now = [0.0]
    window = RequestWindow(60.0, clock=lambda: now[0])
    for status in ("success", "server_error"):
        window.request_finished(
            RequestRecord(request_id="r", route="/generate", model="a", status=status, latency_s=0.1)
        )
    snapshots = [GaugeSnapshot("a", 0, 10, 0, 0, 1), GaugeSnapshot("b", 0, 10, 0, 0, 1)]
    infos = [ModelInfo("a", "main", "text-generation", "cpu", "float32", True)]
    board = StatusBoard(
        window,
        snapshots=lambda: snapshots,
        infos=lambda: infos,
        version="9",
        gpu_memory=lambda: (90.0, 100.0),
        quality_score=lambda model: 0.95 if model == "a" else None,
        canary=lambda model: ("pass", 1.0) if model == "a" else (None, None),
        clock=lambda: now[0],
        wall_clock=lambda: 0.0,
    )
    now[0] = 12.0
    gauges = board.gauges()
    document = board.document()
    assert set(gauges) == {"a", "b", "overall"}
    by_model = {m["model"]: m for m in document["models"]}
    for model in ("a", "b"):
        assert gauges[model][0] == by_model[model]["health"]["score"]
    assert gauges["overall"][0] == document["overall"]["score"] == min(gauges["a"][0], gauges["b"][0])
    assert by_model["a"]["error_ratio"] == 0.5 and by_model["a"]["task"] == "text-generation"
    assert by_model["a"]["quality_score"] == 0.95 and by_model["a"]["canary"] == "pass"
    assert by_model["b"]["health"]["components"]["quality"] is None  # absent, not zero
    assert by_model["b"]["gpu_memory"] == {"used_bytes": 90.0, "total_bytes": 100.0}
    assert document["uptime_s"] == 12.0


async def test_a_fault_on_the_real_app_turns_the_board_critical(app_client) -> None:
    async with app_client(enable_faults=True, breaker_failure_threshold=5) as (client, app):
        engine = app.gateway.engine
        board = StatusBoard(RequestWindow(), snapshots=engine.snapshots, infos=engine.model_infos, version="t")
        before = board.gauges()
        assert before[DEMO_CAUSAL_ID] == (100.0, 0) and before["overall"] == (100.0, 0)
        await set_fault(client, kind="oom", count=1)
        assert (await gen(client)).status_code == 500  # OOM at batch size 1: the breaker opens
        after = board.gauges()
        document = board.document()
    assert after[DEMO_CAUSAL_ID] == (49.0, 2) and after["overall"] == (49.0, 2)
    assert after[DEMO_SEQ2SEQ_ID] == (100.0, 0)
    (generation,) = [m for m in document["models"] if m["model"] == DEMO_CAUSAL_ID]
    assert generation["breaker"] == "open" and generation["health"]["reasons"] == ["breaker"]
