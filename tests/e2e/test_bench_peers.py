"""A peer of the bench (``bench/peers``) as the bench runs it: LitServe serving the demo causal LM.

``make bench`` is not run by CI; this keeps the peer's server script and its harness honest: it answers with the
generated token count of each request of a batch, cut to the request's own ``max_new_tokens``, and stopping it
leaves none of its processes behind (its inference worker outlives a stopped parent unless its whole process
group is stopped). No speed is asserted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.peers.systems import LitServeWire, litserve
from bench.scenarios.mixed import probe_stream
from bench.systems import System
from gateway.demo import DEMO_CAUSAL_ID, ensure_demo_models


async def _lengths(system: System, wanted: list[int]) -> list[int]:
    conns = await system.connections(len(wanted))
    try:
        answers = await asyncio.gather(
            *(system.generate(c, f"prompt {n}", n, timeout_s=120) for c, n in zip(conns, wanted, strict=True))
        )
    finally:
        for c in conns:
            c.close()
    assert all(a.status == 200 for a in answers), [a.body for a in answers]
    return [system.wire.generated_tokens(a.json()) for a in answers]


def test_litserve_answers_each_row_of_a_batch_at_its_own_length_and_stops_whole(
    demo_cache_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("litserve")
    path = ensure_demo_models(demo_cache_dir)[DEMO_CAUSAL_ID]
    with litserve(path, DEMO_CAUSAL_ID, tmp_path / "litserve.log") as system:
        assert isinstance(system.wire, LitServeWire)
        lengths = asyncio.run(_lengths(system, [2, 5, 9]))
        assert all(0 < got <= n for got, n in zip(lengths, [2, 5, 9], strict=True))
        assert asyncio.run(probe_stream(system)) == "no streaming route"
        group = system.server.proc.pid
    assert _living(group) == []


def _living(group: int) -> list[int]:
    """Processes of process group ``group`` that are not zombies (the reaping of orphans is init's business)."""
    living = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            living.append(int(stat.parent.name))
    return living
