"""What the output-quality signals cost: concurrency 32 on a gateway with them on, then one with them off.

    .venv/bin/python bench/quality_cost.py --rounds 5

Each window is paired with the in-process batched limit measured right before it (``scenarios.uniform``), so the
machine's drift cancels out of the comparison: the cost is one minus the ratio of the paired figures, off against
on. Both gateways serve the demo causal LM at the bench's settings, ``GATEWAY_QUALITY_ENABLED`` alone differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:
    # Run as a script: import the bench as the package it is, from the repository root.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import asyncio
import gc
import tempfile

from bench.baseline import InProcessModel
from bench.scenarios.uniform import run_level
from bench.systems import gateway
from bench.workload import BATCH, GATEWAY_SETTINGS, demo_cache


def main() -> int:
    from gateway.demo import DEMO_CAUSAL_ID, ensure_demo_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--warmup-s", type=float, default=1.5)
    parser.add_argument("--measure-s", type=float, default=6.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cache = demo_cache()
    model = InProcessModel(ensure_demo_models(cache)[DEMO_CAUSAL_ID], args.max_new_tokens)
    gc.collect()
    gc.freeze()
    paired = {}
    with tempfile.TemporaryDirectory() as tmp:
        for enabled in ("true", "false"):
            settings = {**GATEWAY_SETTINGS, "quality_enabled": enabled}
            with gateway(cache, Path(tmp) / f"gateway-{enabled}.log", DEMO_CAUSAL_ID, settings) as gw:
                asyncio.run(gw.warm(args.max_new_tokens))
                level = run_level(gw, model, BATCH, args)
            paired[enabled] = level.paired_ratio
            print(f"quality {enabled:5}: {level.throughput:,.0f} tokens/s, {level.paired_ratio:.3f} of the limit")
    cost = 1 - paired["true"] / paired["false"]
    print(f"\ncost of the quality signals at concurrency {BATCH}: {cost:+.1%} of throughput (paired)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
