"""The overload part of ``make bench`` on its own, several times, for the spread of its tail latency.

    .venv/bin/python bench/overload_runs.py --runs 10
    .venv/bin/python bench/overload_runs.py --hey --runs 10

Each run starts a fresh gateway with a queue of 16 rows and sends 64 closed-loop clients at it for 10 s, exactly
as ``run_bench.py`` does; one line a run, and a summary. ``--hey``: the overload through ``hey`` instead (64
connections that ignore ``Retry-After``, timed by hey). The slowest 429 of a run is a tail figure on a shared
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
from bench.scenarios.overload_hey import hey_installed, overload_hey_run
from bench.workload import demo_cache


def polite_runs(cache: Path, model: str, args: argparse.Namespace, tmp: Path) -> None:
    """The polite clients' overload, ``args.runs`` times."""
    worst = []
    print("| run | accepted | rejected | other | hung | 429 p50 ms | 429 p99 ms | 429 max ms | 429 max, logged ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for i in range(1, args.runs + 1):
        log = tmp / f"gateway-{i}.log"
        o = overload_run(cache, log, model, args.max_new_tokens, args.overload_s)
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


def hey_runs(cache: Path, model: str, args: argparse.Namespace, tmp: Path) -> None:
    """The overload through hey, ``args.runs`` times."""
    p99s, met, lost = [], 0, 0
    print(
        "| run | accepted | rejected | other | gateway logged | lost | 429 p50 ms | 429 p99 ms | 429 max ms "
        "| 429 p99, logged ms | 200 p50 ms | 200 p99 ms | met |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for i in range(1, args.runs + 1):
        h = overload_hey_run(cache, tmp / f"gateway-hey-{i}.log", model, args.max_new_tokens, args.overload_s)
        no, ok = h.rejected, h.accepted
        p99s.append(percentile(no, 0.99))
        met += h.ok
        lost += h.lost
        print(
            f"| {i} | {len(ok)} | {len(no)} | {sum(h.other.values())} | {h.logged_count} | {h.lost} "
            f"| {ms(percentile(no, 0.5))} | {ms(p99s[-1])} | {ms(max(no, default=float('nan')))} "
            f"| {ms(percentile(h.logged.get(429, []), 0.99))} "
            f"| {ms(percentile(ok, 0.5))} | {ms(percentile(ok, 0.99))} | {'yes' if h.ok else 'no'} |",
            flush=True,
        )
    print(
        f"\n429 p99 under 20 ms with nothing lost in {met} of {len(p99s)} runs (429 p99 {ms(min(p99s))} to "
        f"{ms(max(p99s))} ms; {lost} lost in all)"
    )


def main() -> int:
    from gateway.demo import DEMO_CAUSAL_ID, ensure_demo_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--overload-s", type=float, default=10.0)
    parser.add_argument("--hey", action="store_true", help="the overload through hey (apt-get install hey)")
    args = parser.parse_args()
    if args.hey and not hey_installed():
        parser.error("hey is not installed (apt-get install hey; make bench installs it)")
    cache = demo_cache()
    ensure_demo_models(cache)
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory() as tmp:
        (hey_runs if args.hey else polite_runs)(cache, DEMO_CAUSAL_ID, args, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
