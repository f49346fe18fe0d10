"""The bench's second model and its mixed workload (``bench/scenarios/mixed.py``) against a real gateway.

``make bench`` is not run by CI: this keeps the parts it adds honest. The bench Llama (``ByT5Tokenizer``, which
has no fast version) loads through ``AutoTokenizer`` and is served as a user's model (``GATEWAY_MODEL``); a
small mix through ``/generate`` and ``/generate_stream`` is counted token for token, with a time to first token
for each streamed request. No speed is asserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from bench.gateway_process import ServerProcess
from bench.scenarios.mixed import probe_stream, run_mixed
from bench.systems import System, TgiWire
from bench.workload import Mixed
from gateway.demo import ensure_bench_model


def test_the_mix_is_fixed_by_its_seed_and_keeps_to_its_ranges() -> None:
    mix = Mixed(n=64)
    requests = mix.requests()
    assert requests == Mixed(n=64).requests() and requests != Mixed(n=64, seed=17).requests()
    assert all(8 <= len(p) <= 512 and 8 <= n <= 256 for p, n, _ in requests)
    assert [s for _, _, s in requests].count(True) == 64 // mix.stream_every


def test_a_small_mix_on_the_bench_model_counts_every_token_and_times_the_first(
    demo_cache_dir: Path, gateway_server: Callable[..., ServerProcess]
) -> None:
    from transformers import AutoTokenizer

    path = ensure_bench_model(demo_cache_dir)
    assert not AutoTokenizer.from_pretrained(path).is_fast  # the slow-tokenizer case is what this model is for
    server = gateway_server(model=str(path))
    system = System("gateway", str(path), server, TgiWire(), metrics_model=str(path))
    mix = Mixed(n=6, prompt_range=(8, 40), new_range=(3, 6), stream_every=2)

    assert asyncio.run(probe_stream(system)) is None
    result = asyncio.run(run_mixed(system, mix, concurrency=3))

    assert result.errors == {} and len(result.latencies) == 6
    # The random model rarely says EOS: every request gets its max_new_tokens, streamed or not.
    assert result.tokens == sum(n for _, n, _ in mix.requests())
    assert len(result.ttfts) == 3
    assert all(0 < t <= max(result.latencies) for t in result.ttfts)
