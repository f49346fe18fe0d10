"""The overload part of ``make bench`` on its own, several times, for the spread of its tail latency.

    .venv/bin/python bench/overload_runs.py --runs 10

Each run starts a fresh gateway with a queue of 16 rows and sends 64 closed-loop clients at it for 10 s, exactly
as ``run_bench.py`` does; one line a run, and a summary. The slowest 429 of a run is a tail figure on a shared
machine: one run says little about the next.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:
    # Run as a script: import the bench as the package it is, from the repository root.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import gc
import tempfile

from bench.report import ms, percentile, server_latencies
from bench.scenarios.overload import overload_run
from bench.workload import demo_cache


def main() -> int:
    from gateway.demo import DEMO_CAUSAL_ID, ensure_demo_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--overload-s", type=float, default=10.0)
    args = parser.parse_args()
    cache = demo_cache()
    ensure_demo_models(cache)
    gc.collect()
    gc.freeze()
    worst = []
    print("| run | accepted | rejected | other | hung | 429 p50 ms | 429 p99 ms | 429 max ms | 429 max, logged ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, args.runs + 1):
            log = Path(tmp) / f"gateway-{i}.log"
            o = overload_run(cache, log, DEMO_CAUSAL_ID, args.max_new_tokens, args.overload_s)
            client, logged = o.rejected_latencies, server_latencies(log, 429)
            worst.append(max(client))
            print(
                f"| {i} | {o.accepted} | {o.rejected} | {sum(o.other.values())} | {o.hung} "
                f"| {ms(percentile(client, 0.5))} | {ms(percentile(client, 0.99))} | {ms(max(client))} "
                f"| {ms(max(logged))} |",
                flush=True,
            )
    under = sum(w < 0.020 for w in worst)
    print(f"\nslowest 429 under 20 ms in {under} of {len(worst)} runs ({ms(min(worst))} to {ms(max(worst))} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
