"""What a run measured, presented: the markdown report (stdout and ``latest.md``) and the JSON summary
(``latest.json``); the plot is ``bench.plot``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.gateway_process import setting_env
from bench.scenarios.chat_vs_generate import ChatVsGenerate
from bench.scenarios.overload import Overload
from bench.scenarios.uniform import Level
from bench.workload import BATCH, GATEWAY_SETTINGS, OVERLOAD_CLIENTS, OVERLOAD_QUEUE

if TYPE_CHECKING:
    # It imports this module's percentile: a type here only.
    from bench.scenarios.overload_hey import HeyOverload


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``, interpolated linearly; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def server_latencies(log: Path, status: int) -> list[float]:
    """Latencies (s) the gateway itself logged for answers with ``status`` (its JSON access log)."""
    out = []
    for line in log.read_text().splitlines():
        if '"request finished"' in line:
            record = json.loads(line)
            if record.get("status_code") == status:
                out.append(record["latency_ms"] / 1000)
    return out


@dataclass
class Run:
    """Everything one benchmark run measured: what ``report`` and ``summary`` present."""

    args: argparse.Namespace
    levels: list[Level]
    pairs: list[tuple[float, float]]
    overload: Overload
    rejected_server: list[float]
    scrapes: list[float]
    missing: list[str]
    chat: ChatVsGenerate | None = None  # /v1/chat/completions against /generate at BATCH on the same gateway
    hey: HeyOverload | None = None  # the overload through hey; None: hey is not installed

    @property
    def best_limit(self) -> float:
        return max(i for lv in self.levels for _, i in lv.rounds)

    @property
    def overhead(self) -> float:
        """Gateway p50 less in-process p50 of the paired single calls (s)."""
        return statistics.median(p[1] for p in self.pairs) - statistics.median(p[0] for p in self.pairs)


def _settings_text() -> str:
    return ", ".join(f"{k}={v}" for k, v in setting_env(GATEWAY_SETTINGS).items())


def _level_row(lv: Level, best_limit: float) -> str:
    lat = lv.latencies
    errors = ", ".join(f"{k}: {v}" for k, v in lv.errors.items()) or "0"
    round_limits = "–".join(f"{x:,.0f}" for x in (min(i for _, i in lv.rounds), max(i for _, i in lv.rounds)))
    return (
        f"| {lv.concurrency} | {len(lat)} | {lv.throughput:,.0f} | {round_limits} | {lv.paired_ratio:.2f} | "
        f"{lv.throughput / best_limit:.2f} | {ms(percentile(lat, 0.5))} | {ms(percentile(lat, 0.95))} | "
        f"{ms(percentile(lat, 0.99))} | {lv.mean_tokens:.1f} | {lv.mean_batch:.1f} | {errors} | "
        f"{lv.server_cpu_s / lv.window_s:.0%} | {lv.client_cpu_s / lv.window_s:.0%} |"
    )


def _throughput_section(run: Run) -> list[str]:
    args = run.args
    singles = next((lv.single_s for lv in run.levels if lv.concurrency == 1), [])
    single_p50 = statistics.median(singles) if singles else float("nan")
    cores = len(os.sched_getaffinity(0))
    return [
        "# Gateway benchmark",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {platform.machine()}, {cores} cores, Python "
        f"{platform.python_version()}. Demo causal LM, greedy, max_new_tokens={args.max_new_tokens}. Each level: "
        f"{args.rounds} rounds ({max(args.rounds, 5)} at concurrency {BATCH}) of (in-process limit, then "
        f"{args.warmup_s:g} s warm-up + {args.measure_s:g} s of closed-loop clients on the gateway). Gateway settings: "
        + _settings_text()
        + " (the rest default).",
        "",
        "## Throughput and latency",
        "",
        "| concurrency | requests | tokens/s | in-process limit (round bests) | of the limit, paired | "
        "of the best limit | p50 ms | p95 ms | p99 ms | mean tokens | mean batch | errors | gateway CPU | "
        "client CPU |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(_level_row(lv, run.best_limit) for lv in run.levels),
        "",
        f"In-process limit: one batched `generate` of {BATCH} prompts, tokens/s, best of {args.repeats} runs at "
        "torch's default thread count and at the gateway's; measured before each gateway window (this machine is "
        f"shared and its speed drifts), best of the whole run {run.best_limit:,.0f}. Paired: the median over rounds "
        "of the window's tokens/s over the limit measured just before it. Single in-process generate (next to the "
        f"concurrency-1 windows): p50 {ms(single_p50)} ms. CPU columns: share of one core used by the gateway "
        "(its HTTP process and its model processes together) and by this load generator during the windows.",
        "",
    ]


def _overhead_section(run: Run) -> list[str]:
    pairs = run.pairs
    pair_in = statistics.median(p[0] for p in pairs)
    pair_gw = statistics.median(p[1] for p in pairs)
    pair_diff = statistics.median(g - i for i, g in pairs)
    return [
        "## Overhead at concurrency 1, paired",
        "",
        f"{len(pairs)} pairs of the same prompt: an in-process `generate` (the gateway's thread count), then the "
        "same request through the gateway (HTTP, JSON, queue, model process, per-step tracking).",
        "",
        "| in-process p50 ms | gateway p50 ms | difference of p50s ms | median of paired differences ms |",
        "| ---: | ---: | ---: | ---: |",
        f"| {ms(pair_in)} | {ms(pair_gw)} | {ms(run.overhead)} | {ms(pair_diff)} |",
        "",
    ]


def _overload_section(run: Run) -> list[str]:
    overload, logged = run.overload, run.rejected_server
    rejected = overload.rejected_latencies
    max_rejected = max(rejected) if rejected else float("nan")
    return [
        f"## Overload: {OVERLOAD_CLIENTS} clients, queue of {OVERLOAD_QUEUE}, {run.args.overload_s:g} s",
        "",
        "A refused client waits as `Retry-After` says; an answered one sends its next request at once.",
        "",
        "| accepted (200) | rejected (429) | other statuses | hung | 429 p50 ms | 429 p99 ms | 429 max ms | "
        "429 without Retry-After |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {overload.accepted} | {overload.rejected} | {overload.other or 0} | {overload.hung} | "
        f"{ms(percentile(rejected, 0.5))} | {ms(percentile(rejected, 0.99))} | {ms(max_rejected)} | "
        f"{overload.missing_retry_after} |",
        "",
        f"429 latency as the gateway logged it (from its receiving the request to the end of the answer): p50 "
        f"{ms(percentile(logged, 0.5))} ms, p99 {ms(percentile(logged, 0.99))} ms, max "
        f"{ms(max(logged) if logged else float('nan'))} ms. The client-side figures above also "
        "hold the load generator's own delays (64 clients in one Python process on the same 2 cores).",
        "",
    ]


def hey_section(hey: HeyOverload | None, duration_s: float) -> list[str]:
    """The overload through hey: what hey timed, by outcome, and the 429s as the gateway logged them."""
    title = f"## Overload through hey: {OVERLOAD_CLIENTS} connections, queue of {OVERLOAD_QUEUE}, {duration_s:g} s"
    if hey is None:
        return [title, "", "hey not installed (`apt-get install hey`; `make bench` installs it): not run.", ""]
    ok, no = hey.accepted, hey.rejected
    logged = hey.logged.get(429, [])
    return [
        title,
        "",
        f"hey (Go, its own process on the same cores) holds {OVERLOAD_CLIENTS} keep-alive connections and sends "
        "each one's next request as soon as the last is answered; it does not honour `Retry-After`. Times as hey "
        "measured them. Lost: requests the gateway finished that hey has no answer for (hey's CSV leaves out "
        "the requests it gave up on).",
        "",
        "| accepted (200) | rejected (429) | other statuses | lost | 429 p50 ms | 429 p99 ms | 429 max ms | "
        "200 p50 ms | 200 p99 ms | 200 max ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {len(ok)} | {len(no)} | {hey.other or 0} | {hey.lost} | {ms(percentile(no, 0.5))} | "
        f"{ms(percentile(no, 0.99))} | {ms(max(no, default=float('nan')))} | {ms(percentile(ok, 0.5))} | "
        f"{ms(percentile(ok, 0.99))} | {ms(max(ok, default=float('nan')))} |",
        "",
        f"429 latency as the gateway logged it: p50 {ms(percentile(logged, 0.5))} ms, p99 "
        f"{ms(percentile(logged, 0.99))} ms, max {ms(max(logged, default=float('nan')))} ms. hey exited with "
        f"{hey.exit_code}; the gateway was {'still running' if hey.gateway_alive else 'gone'} after it.",
        "",
    ]


def _hey_run_section(run: Run) -> list[str]:
    return hey_section(run.hey, run.args.overload_s)


def _hey_target(hey: HeyOverload | None) -> str:
    target = "| overload through hey: 429 p99 under 20 ms as hey times them, nothing lost |"
    if hey is None:
        return f"{target} hey not installed | not run |"
    return (
        f"{target} 429 p99 {ms(percentile(hey.rejected, 0.99))} ms, {hey.lost} lost, "
        f"{sum(hey.other.values())} other | {'yes' if hey.ok else 'no'} |"
    )


def _metrics_section(run: Run) -> list[str]:
    scrapes, missing = run.scrapes, run.missing
    return [
        "## /metrics after the traffic",
        "",
        f"{len(scrapes)} scrapes: p50 {ms(percentile(scrapes, 0.5))} ms, max {ms(max(scrapes))} ms; "
        + ("every contract series present" if not missing else f"missing: {', '.join(missing)}")
        + " (GPU and torch-memory gauges exist only with a GPU).",
        "",
    ]


def _targets_section(run: Run) -> list[str]:
    ratio = next((lv.paired_ratio for lv in run.levels if lv.concurrency == BATCH), float("nan"))
    overhead, overload, scrapes = run.overhead, run.overload, run.scrapes
    rejected = overload.rejected_latencies
    max_rejected = max(rejected) if rejected else float("nan")
    return [
        "## Targets",
        "",
        "| target | result | met |",
        "| --- | --- | --- |",
        f"| throughput at concurrency {BATCH} >= 0.90 of the in-process batched limit (paired) | {ratio:.2f} | "
        f"{'yes' if ratio >= 0.90 else 'no'} |",
        "| p50 latency at concurrency 1 within 5 ms of a single in-process generate (paired) | "
        f"{overhead * 1000:+.1f} ms | "
        f"{'yes' if overhead <= 0.005 else 'no'} |",
        f"| overload: accepted all succeed, 429s under 20 ms, nothing hangs | {overload.accepted} accepted, "
        f"{sum(overload.other.values())} other, max 429 {ms(max_rejected)} ms, {overload.hung} hung | "
        f"{'yes' if overload.ok else 'no'} |",
        _hey_target(run.hey),
        f"| /metrics under 50 ms with all series | max {ms(max(scrapes))} ms | "
        f"{'yes' if max(scrapes) < 0.050 and not run.missing else 'no'} |",
        *_chat_target(run),
        "",
    ]


def _chat_target(run: Run) -> list[str]:
    """/v1/chat/completions against /generate at BATCH, windows alternating, the model given the same tokens."""
    if run.chat is None:
        return []
    chat = run.chat
    return [
        f"| /v1/chat/completions at concurrency {BATCH} >= 0.95 of /generate's, the same tokens to the model "
        f"(same text: {chat.ratio_same_text:.2f}) | {chat.ratio_same_tokens:.2f} | "
        f"{'yes' if chat.ratio_same_tokens >= 0.95 else 'no'} |"
    ]


def _chat_section(run: Run) -> list[str]:
    chat = run.chat
    if chat is None:
        return []
    rows = [
        ("/v1/chat/completions", chat.chat, [c for c, _, _ in chat.rounds]),
        ("/generate, the prompt the template renders (same tokens)", chat.same_tokens, [t for _, t, _ in chat.rounds]),
        ("/generate, the bare message (same text)", chat.same_text, [x for _, _, x in chat.rounds]),
    ]
    return [
        f"## /v1/chat/completions against /generate, concurrency {BATCH}",
        "",
        f"{len(chat.rounds)} rounds of one window per route on the same gateway ({run.args.warmup_s:g} s warm-up + "
        f"{run.args.measure_s:g} s each), the order turning each round. The chat route renders each message "
        "through the model's chat template: /generate is measured once with that rendered prompt (the model "
        "sees the same tokens: what the OpenAI adapter costs) and once with the bare message (what a user "
        "of either route sends: the template's extra prompt tokens count too).",
        "",
        "| route | tokens/s per round | median | p50 ms | p99 ms | mean tokens | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {name} | {', '.join(f'{v:,.0f}' for v in per_round)} | {statistics.median(per_round):,.0f} | "
            f"{ms(percentile(level.latencies, 0.5))} | {ms(percentile(level.latencies, 0.99))} | "
            f"{level.mean_tokens:.1f} | {sum(level.errors.values())} |"
            for name, level, per_round in rows
        ),
        "",
        f"Chat over /generate, median of the rounds' ratios: {chat.ratio_same_tokens:.2f} with the same tokens, "
        f"{chat.ratio_same_text:.2f} with the same text.",
        "",
    ]


def report(run: Run) -> str:
    """The run as markdown: throughput and latency by level, paired overhead, overload (polite clients, then
    hey), /metrics, targets."""
    sections = (
        _throughput_section,
        _overhead_section,
        _overload_section,
        _hey_run_section,
        _chat_section,
        _metrics_section,
        _targets_section,
    )
    return "\n".join(line for section in sections for line in section(run))


def _pct(values: list[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(values, q / 100) * 1000, 2) for q in (50, 95, 99, 100)}


def _level_summary(lv: Level) -> dict[str, Any]:
    return {
        "concurrency": lv.concurrency,
        "requests": len(lv.latencies),
        "tokens_per_s": round(lv.throughput, 1),
        "rounds_gateway_vs_in_process_tokens_per_s": [[round(g), round(i)] for g, i in lv.rounds],
        "paired_ratio": round(lv.paired_ratio, 3),
        "latency_ms": _pct(lv.latencies),
        "mean_batch": round(lv.mean_batch, 2),
        "mean_tokens": round(lv.mean_tokens, 2),
        "errors": lv.errors,
    }


def _chat_summary(chat: ChatVsGenerate) -> dict[str, Any]:
    return {
        "rounds_chat_same_tokens_same_text_tokens_per_s": [[round(v) for v in r] for r in chat.rounds],
        "ratio_same_tokens": round(chat.ratio_same_tokens, 3),
        "ratio_same_text": round(chat.ratio_same_text, 3),
        "chat": _level_summary(chat.chat),
        "generate_same_tokens": _level_summary(chat.same_tokens),
        "generate_same_text": _level_summary(chat.same_text),
    }


def summary(run: Run) -> dict[str, Any]:
    """The run's numbers, for comparing runs (``latest.json``)."""
    overload, pairs = run.overload, run.pairs
    return {
        "args": {k: str(v) for k, v in vars(run.args).items()},
        "gateway_settings": setting_env(GATEWAY_SETTINGS),
        "levels": [_level_summary(lv) for lv in run.levels],
        "chat_vs_generate": _chat_summary(run.chat) if run.chat is not None else None,
        "paired_single_ms": {
            "in_process": _pct([p[0] for p in pairs]),
            "gateway": _pct([p[1] for p in pairs]),
            "median_difference": round(statistics.median(g - i for i, g in pairs) * 1000, 2),
        },
        "overload": {
            "accepted": overload.accepted,
            "rejected": overload.rejected,
            "other": overload.other,
            "hung": overload.hung,
            "missing_retry_after": overload.missing_retry_after,
            "rejected_latency_ms_client": _pct(overload.rejected_latencies),
            "rejected_latency_ms_server": _pct(run.rejected_server),
        },
        "overload_hey": hey_summary(run.hey),
        "metrics_scrape_ms": _pct(run.scrapes),
        "missing_series": run.missing,
    }


def hey_summary(hey: HeyOverload | None) -> dict[str, Any] | None:
    """The overload through hey in ``latest.json``; ``None``: hey is not installed."""
    if hey is None:
        return None
    return {
        "accepted": len(hey.accepted),
        "rejected": len(hey.rejected),
        "other": {str(k): v for k, v in hey.other.items()},
        "lost": hey.lost,
        "hey_exit_code": hey.exit_code,
        "gateway_alive": hey.gateway_alive,
        "rejected_latency_ms_client": _pct(hey.rejected),
        "accepted_latency_ms_client": _pct(hey.accepted),
        "rejected_latency_ms_server": _pct(hey.logged.get(429, [])),
        "met": hey.ok,
    }
