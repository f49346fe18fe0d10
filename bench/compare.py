"""Systems side by side on one model: the gateway and its peers, each at its own defaults, one after another.

For each model of the run (the demo causal LM; the bench Llama with its slow tokenizer), each system in turn is
started, measured and stopped: the same 64-token request at concurrency ``BATCH`` in rounds paired with the
in-process limit (``scenarios.uniform``), single calls paired with in-process ones at concurrency 1, and the
mixed workload (``scenarios.mixed``). Only one system runs at a time. ``present`` turns the figures into the
report's one table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.baseline import InProcessModel
from bench.scenarios.mixed import MixedResult, run_mixed
from bench.scenarios.uniform import Level, paired_singles, run_level
from bench.systems import System
from bench.workload import BATCH, Mixed

SystemStarter = Callable[[], contextlib.AbstractContextManager[System]]


@dataclass
class SystemFigures:
    """What one system did on one model."""

    system: str
    uniform: Level
    pairs: list[tuple[float, float]]
    mixed: MixedResult

    @property
    def overhead_s(self) -> float:
        """The system's p50 less the in-process p50 of the paired single calls."""
        return statistics.median(s for _, s in self.pairs) - statistics.median(i for i, _ in self.pairs)


@dataclass
class ModelComparison:
    model: str
    windows: tuple[float, float]  # (warm-up, measured) seconds of the uniform windows on this model
    systems: list[SystemFigures] = field(default_factory=list)


def measure(system: System, model: InProcessModel, args: argparse.Namespace) -> SystemFigures:
    """The three measurements of ``system`` (already running), each paired with ``model`` where it applies."""
    asyncio.run(system.warm(args.max_new_tokens))
    print(f"  {system.name}: concurrency {BATCH} ...", file=sys.stderr)
    uniform = run_level(system, model, BATCH, args, rounds=args.compare_rounds)
    print(f"  {system.name}: concurrency 1, paired ...", file=sys.stderr)
    pairs = asyncio.run(paired_singles(system, model, args.compare_pairs))
    print(f"  {system.name}: mixed ...", file=sys.stderr)
    mixed = asyncio.run(run_mixed(system, Mixed(n=args.mixed_requests)))
    return SystemFigures(system.name, uniform, pairs, mixed)


def compare(label: str, model_dir: Path, starters: list[SystemStarter], args: argparse.Namespace) -> ModelComparison:
    """Every system of ``starters`` on the model in ``model_dir``, one at a time."""
    print(f"comparison on {label} ...", file=sys.stderr)
    model = InProcessModel(model_dir, args.max_new_tokens)
    # Answers come in cohorts (rows that joined together finish together): a window holds several in-process
    # batches' worth, so that one cohort more or less in it moves its tokens/s by little.
    batch_s = BATCH * args.max_new_tokens / model.batched_tps(1)[0]
    args = argparse.Namespace(**vars(args))
    args.warmup_s, args.measure_s = max(args.warmup_s, batch_s), max(args.measure_s, 8 * batch_s)
    result = ModelComparison(label, (args.warmup_s, args.measure_s))
    for start in starters:
        with start() as system:
            result.systems.append(measure(system, model, args))
    del model
    return result


def _row(model: str, f: SystemFigures) -> str:
    from bench.report import percentile

    m, u = f.mixed, f.uniform
    ttft = (
        f"{percentile(m.ttfts, 0.5):.2f} / {percentile(m.ttfts, 0.99):.2f}"
        if m.ttfts
        else "none: " + (m.stream_error or "").replace("|", "/")[:70]
    )
    errors = sum(u.errors.values()) + sum(m.errors.values())
    return (
        f"| {model} | {f.system} | {u.throughput:,.0f} | {u.paired_ratio:.2f} | {f.overhead_s * 1000:+.1f} | "
        f"{m.throughput:,.0f} | {percentile(m.latencies, 0.5):.2f} / {percentile(m.latencies, 0.99):.2f} | "
        f"{ttft} | {m.wall_s:.0f} | {errors} |"
    )


def present(comparisons: list[ModelComparison], args: argparse.Namespace) -> list[str]:
    """The comparison as one markdown table, and how each column was measured."""
    mix = Mixed(n=args.mixed_requests)
    return [
        "## The gateway and its peers, each at its own defaults",
        "",
        f"| model | system | tokens/s, {BATCH} x {args.max_new_tokens} tokens | of the in-process limit, paired | "
        "concurrency 1: p50 less in-process p50, ms | mixed tokens/s | mixed p50 / p99 s | mixed TTFT p50 / p99 s | "
        "mixed wall s | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(_row(c.model, f) for c in comparisons for f in c.systems),
        "",
        f"Uniform: the same kind of {args.max_new_tokens}-token request from {BATCH} closed-loop clients, "
        f"{args.compare_rounds} rounds of (in-process batched `generate` of {BATCH}, then a warm-up and a window of "
        "closed-loop clients: "
        + "; ".join(f"{c.model} {c.windows[0]:.1f} s + {c.windows[1]:.1f} s" for c in comparisons)
        + ", at least 8 in-process batches long); paired: the median over rounds of the window's tokens/s over the "
        f"limit just before it. Concurrency 1: {args.compare_pairs} pairs of an in-process single `generate` (cores "
        f"less one torch threads) and the same request through the system. Mixed: {mix.n} fixed-seed requests, "
        f"prompts of {mix.prompt_range[0]}-{mix.prompt_range[1]} bytes (= tokens, byte-level tokenizers), "
        f"max_new_tokens {mix.new_range[0]}-{mix.new_range[1]}, by {BATCH} closed-loop clients until all are "
        f"answered; tokens/s over the wall time; latency to the last byte. TTFT: every {mix.stream_every}th request "
        "of the mix is streamed where the system streams, time to its first server-sent event carrying a token; "
        "'none' says why a system has none. Systems run one at a time; the gateway with no settings but the "
        "model, LitServe (bench/peers/litserve_server.py: max_batch_size 32, batch_timeout 10 ms, "
        "static batches generated to their longest request), `transformers serve --continuous-batching` over "
        "/v1/completions.",
        "",
        "### The gateway's targets against its peers",
        "",
        "| model | target | result | met |",
        "| --- | --- | --- | --- |",
        *(line for c in comparisons for line in _targets(c)),
        "",
    ]


def _targets(c: ModelComparison) -> list[str]:
    """The issue's targets for the gateway at its defaults against the peers on one model (where they ran)."""
    from bench.report import percentile

    by_name = {f.system: f for f in c.systems}
    gw, ls, ts = (by_name.get(n) for n in ("gateway", "LitServe", "transformers serve --continuous-batching"))
    if gw is None:
        return []
    rows = [
        ("uniform at 32 >= 0.90 of the in-process limit, paired", f"{gw.uniform.paired_ratio:.2f}",
         gw.uniform.paired_ratio >= 0.90),
        ("concurrency 1 within 5 ms of in-process (p50)", f"{gw.overhead_s * 1000:+.1f} ms", gw.overhead_s <= 0.005),
    ]  # fmt: skip
    p99 = percentile(gw.mixed.latencies, 0.99)
    for peer, factor in ((ls, 2.0), (ts, 1.3)):
        if peer is not None:
            ratio = gw.mixed.throughput / peer.mixed.throughput if peer.mixed.throughput else float("inf")
            peer_p99 = percentile(peer.mixed.latencies, 0.99)
            rows.append((f"mixed tokens/s >= {factor:g}x {peer.system}", f"{ratio:.2f}x", ratio >= factor))
            rows.append((f"mixed p99 below {peer.system}'s", f"{p99:.1f} s against {peer_p99:.1f} s", p99 < peer_p99))
    if ls is not None:
        ahead = gw.uniform.throughput > ls.uniform.throughput
        rows.append(("uniform at 32 ahead of LitServe", f"{gw.uniform.throughput:,.0f} against "
                     f"{ls.uniform.throughput:,.0f} tokens/s", ahead))  # fmt: skip
    return [f"| {c.model} | {t} | {r} | {'yes' if ok else 'no'} |" for t, r, ok in rows]


def summary(comparisons: list[ModelComparison]) -> list[dict[str, Any]]:
    from bench.report import percentile

    return [
        {
            "model": c.model,
            "system": f.system,
            "uniform_tokens_per_s": round(f.uniform.throughput, 1),
            "uniform_rounds": [[round(g), round(i)] for g, i in f.uniform.rounds],
            "uniform_paired_ratio": round(f.uniform.paired_ratio, 3),
            "overhead_ms": round(f.overhead_s * 1000, 2),
            "mixed_tokens_per_s": round(f.mixed.throughput, 1),
            "mixed_p50_s": round(percentile(f.mixed.latencies, 0.5), 3),
            "mixed_p99_s": round(percentile(f.mixed.latencies, 0.99), 3),
            "mixed_ttft_p50_s": round(percentile(f.mixed.ttfts, 0.5), 3) if f.mixed.ttfts else None,
            "mixed_stream_error": f.mixed.stream_error,
            "mixed_errors": f.mixed.errors,
            "mixed_server_cpu_s": round(f.mixed.server_cpu_s, 1),
        }
        for c in comparisons
        for f in c.systems
    ]
