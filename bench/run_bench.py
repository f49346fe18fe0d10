"""Load benchmark of the gateway and its peers (``make bench``).

What it does, in one process and one run:

1. Starts ``gateway serve`` as a subprocess on a free loopback port, and loads the same demo model here with
   transformers' ``from_pretrained`` (from the demo cache the gateway serves).
2. For each concurrency level (1, 8, 32, 64), a few rounds of: the in-process limit with no HTTP (one batched
   ``generate`` of 32 prompts, best of a few runs, at torch's default thread count and at the gateway's, cores
   less one; and single-prompt ``generate`` calls next to concurrency 1), then a window of closed-loop clients
   on the gateway (each sends its next request when the last one is answered). The two never run at the same
   time. Measuring the limit right before each window pairs them in time: this machine is shared and its speed
   drifts by tens of percent over minutes. Throughput is generated tokens per second, counted from
   ``details.generated_tokens`` of every answer, with p50/p95/p99 latency.
3. Overload: a second gateway whose queue holds 16 rows, and 64 clients; every request must end in 200 or 429,
   429s must come at once (under 20 ms) and nothing may hang. Then the same through ``hey`` (64 connections
   that ignore ``Retry-After``, from an external load generator) on a third gateway, if hey is installed.
4. ``/metrics`` scrape latency after the traffic, and whether every series of the contract is there.
5. The comparison (``bench.compare``): on the demo model and on the bench Llama (6 layers, width 384, a slow
   byte-level tokenizer), the gateway, LitServe and ``transformers serve --continuous-batching``, each at its
   defaults and one at a time: 64-token requests at concurrency 32 paired with the in-process limit, single
   calls paired at concurrency 1, and a mixed workload of 192 requests (TTFT from its streamed ones).
   ``--gateway-env NAME=VALUE`` adds a candidate gateway under its own name; ``--only-compare`` skips 1-4.

Results: a markdown table on stdout and in ``bench/results/latest.md`` (raw numbers in ``latest.json``), and a
plot in ``bench/results/latest.png``.

Each simulated user has its own keep-alive connection (``bench.http_load``). The load generator runs on the same
2 cores as the gateway, so its CPU is the gateway's loss; the CPU columns of the report say what each side used.
The steps above are the bench's modules (see ``bench/__init__.py``); this script runs them in order.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:
    # Run as a script: import the bench as the package the tests import too, from the repository root.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import asyncio
import gc
import json
import os
import time

from bench.baseline import InProcessModel
from bench.compare import ModelComparison, compare, present
from bench.compare import summary as compare_summary
from bench.lineup import MODELS, SYSTEMS, starters
from bench.plot import plot
from bench.report import Run, report, server_latencies, summary
from bench.scenarios.chat_vs_generate import run_chat_vs_generate
from bench.scenarios.gateway_metrics import scrape_metrics
from bench.scenarios.overload import overload_run
from bench.scenarios.overload_hey import hey_installed, overload_hey_run
from bench.scenarios.uniform import Level, paired_singles, run_level
from bench.systems import System, gateway
from bench.workload import BATCH, GATEWAY_SETTINGS, LEVELS, demo_cache

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="in-process + gateway rounds per level")
    parser.add_argument("--warmup-s", type=float, default=1.5)
    parser.add_argument("--measure-s", type=float, default=6.0, help="gateway window per round")
    parser.add_argument("--overload-s", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3, help="in-process runs per measurement (the best counts)")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--pairs", type=int, default=40, help="paired single calls (in-process, gateway)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--models", default=",".join(MODELS), help="models of the comparison (empty: none)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="systems of the comparison, in order")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE[,NAME=VALUE]",
        help="a candidate: one more gateway in the comparison with this environment (comma-separated), its own name",
    )
    parser.add_argument("--compare-rounds", type=int, default=3, help="uniform rounds per system in the comparison")
    parser.add_argument("--compare-pairs", type=int, default=20, help="paired single calls per system")
    parser.add_argument("--mixed-requests", type=int, default=192)
    parser.add_argument("--only-compare", action="store_true", help="the comparison only (no gateway sections)")
    return parser.parse_args()


def measure_system(
    system: System, model: InProcessModel, args: argparse.Namespace
) -> tuple[list[Level], list[tuple[float, float]]]:
    """The uniform levels and the paired single calls on one system, each paired with ``model`` in process.
    Every system of a run (the gateway, a peer serving the same model) goes through this."""
    asyncio.run(system.warm(args.max_new_tokens))
    levels = []
    for c in (int(x) for x in args.levels.split(",")):
        print(f"concurrency {c} ...", file=sys.stderr)
        levels.append(run_level(system, model, c, args))
    print("concurrency 1, paired with in-process calls ...", file=sys.stderr)
    pairs = asyncio.run(paired_singles(system, model, args.pairs))
    return levels, pairs


def gateway_sections(cache: Path, args: argparse.Namespace) -> Run:
    """The gateway's own sections on the demo model: levels, overhead, /v1/chat/completions, overload, /metrics."""
    from gateway.demo import DEMO_CAUSAL_ID, ensure_demo_models

    model_dir = ensure_demo_models(cache)[DEMO_CAUSAL_ID]
    model = InProcessModel(model_dir, args.max_new_tokens)
    with gateway(cache, args.out / "gateway.log", DEMO_CAUSAL_ID, GATEWAY_SETTINGS) as gw:
        levels, pairs = measure_system(gw, model, args)
        print(f"concurrency {BATCH}: /v1/chat/completions against /generate ...", file=sys.stderr)
        chat = run_chat_vs_generate(gw, model_dir, args)
        scrapes, missing = asyncio.run(scrape_metrics(gw))
    print("overload ...", file=sys.stderr)
    overload_log = args.out / "gateway-overload.log"
    overload = overload_run(cache, overload_log, DEMO_CAUSAL_ID, args.max_new_tokens, args.overload_s)
    hey = None
    if hey_installed():
        print("overload through hey ...", file=sys.stderr)
        hey_log = args.out / "gateway-overload-hey.log"
        hey = overload_hey_run(cache, hey_log, DEMO_CAUSAL_ID, args.max_new_tokens, args.overload_s)
    rejected_server = server_latencies(overload_log, 429)
    return Run(args, levels, pairs, overload, rejected_server, scrapes, missing, chat, hey)


def main() -> int:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = demo_cache()
    started = time.monotonic()
    # This process holds torch and transformers too: out of the collector's sight, so that its full collections
    # (a few hundred ms each) do not land in the clients' latencies (the gateway does the same for its own).
    gc.collect()
    gc.freeze()
    run = None if args.only_compare else gateway_sections(cache, args)
    comparisons: list[ModelComparison] = []
    for name in filter(None, args.models.split(",")):
        label, path, chosen = starters(name, cache, args.out, args)
        comparisons.append(compare(label, path, chosen, args))
    text = report(run) if run is not None else "# Gateway benchmark\n"
    if comparisons:
        text += "\n" + "\n".join(present(comparisons, args))
    text += f"\nWhole run: {time.monotonic() - started:.0f} s; load average at the end {os.getloadavg()}.\n"
    print(text)
    (args.out / "latest.md").write_text(text)
    numbers = summary(run) if run is not None else {}
    numbers["comparison"] = compare_summary(comparisons)
    if run is not None:
        plot(args.out / "latest.png", run.levels, args.max_new_tokens)
    (args.out / "latest.json").write_text(json.dumps(numbers, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
