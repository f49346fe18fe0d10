"""Closed-loop clients at one concurrency level, each window right after an in-process limit; and single calls
paired with single in-process ones.

Every simulated user sends its next request as soon as the last is answered; what it sends is the window's
``Workload`` (``Uniform`` here: the same kind of request from everyone, ``max_new_tokens`` each; a mixed
workload is another ``Workload``). The in-process limit and a window never run at the same time; measuring the
limit right before each window pairs them in time, because this machine is shared and its speed drifts by tens
of percent over minutes. Throughput counts the generated tokens each answer reports, pro-rated over the time from
sending the request to its answer: only the share inside the window counts (``_Window.count``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field

import httpx

from bench.baseline import InProcessModel
from bench.http_load import Connection
from bench.scenarios.gateway_metrics import batch_size_series, batch_stats, metric_values
from bench.systems import System, close_all
from bench.workload import BATCH, Uniform, Workload


@dataclass
class Level:
    """One concurrency level: its windows on a system, each right after an in-process measurement."""

    concurrency: int
    window_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0  # generated tokens pro-rated into the windows (throughput)
    answered_tokens: int = 0  # generated tokens of the answers that arrived within the windows
    errors: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    batch_rows: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    # per round: (the system's tokens/s in the window, in-process batched tokens/s just before it)
    rounds: list[tuple[float, float]] = field(default_factory=list)
    single_s: list[float] = field(default_factory=list)  # in-process single generates (concurrency 1 only)

    @property
    def throughput(self) -> float:
        return self.tokens / self.window_s if self.window_s else 0.0

    @property
    def paired_ratio(self) -> float:
        """Median over rounds of the system's tokens/s over the in-process limit measured just before."""
        return statistics.median(g / i for g, i in self.rounds) if self.rounds else float("nan")

    @property
    def mean_tokens(self) -> float:
        return self.answered_tokens / len(self.latencies) if self.latencies else 0.0

    @property
    def mean_batch(self) -> float:
        return self.batch_rows / self.batches if self.batches else 0.0


@dataclass
class _Window:
    """The clock marks of one window: answers between ``measure_from`` and ``stop_at`` count for latency; every
    answer's tokens count for throughput in the share of its time that falls inside the window."""

    measure_from: float
    stop_at: float
    workload: Workload
    tokens: float = 0.0

    def count(self, sent: float, done: float, tokens: int) -> None:
        """Pro-rate a request's tokens over its time from sending to answer: only the share that overlaps the
        window counts. Counting whole answers instead would quantize the figure by cohorts: rows that start
        together (a static batch, or a continuous batch under a uniform load) are answered together, and a
        window holds a whole number of cohorts, so its tokens/s jumps by a cohort's worth between windows."""
        inside = min(done, self.stop_at) - max(sent, self.measure_from)
        if inside > 0:
            self.tokens += tokens * inside / max(done - sent, 1e-9)


async def _user(system: System, conn: Connection, index: int, level: Level, window: _Window) -> None:
    """One closed-loop client until the window ends; what it gets inside the window goes into ``level``."""
    k = 0
    while (sent := time.perf_counter()) < window.stop_at:
        prompt, max_new_tokens = window.workload.request(index, k)
        k += 1
        r = await system.generate(conn, prompt, max_new_tokens, timeout_s=120.0, details=True)
        done = time.perf_counter()
        tokens = system.wire.generated_tokens(r.json()) if r.status == 200 else 0
        window.count(sent, done, tokens)
        if done < window.measure_from or done > window.stop_at:
            continue
        if r.status != 200:
            level.errors[str(r.status)] = level.errors.get(str(r.status), 0) + 1
            continue
        level.latencies.append(done - sent)
        level.answered_tokens += tokens


async def run_window(system: System, level: Level, workload: Workload, warmup_s: float, measure_s: float) -> float:
    """Closed-loop clients for ``warmup_s + measure_s``; answers that arrive within the last ``measure_s`` count
    (tokens and latencies). Returns the window's tokens/s."""
    conns = await system.connections(level.concurrency)
    try:
        start = time.perf_counter()
        window = _Window(start + warmup_s, start + warmup_s + measure_s, workload)
        async with httpx.AsyncClient(base_url=system.url, timeout=30) as probe:
            users = [asyncio.ensure_future(_user(system, conns[i], i, level, window)) for i in range(level.concurrency)]
            await asyncio.sleep(max(window.measure_from - time.perf_counter(), 0))
            before = await metric_values(probe) if system.metrics_model else {}
            cpu_server, cpu_client, t0 = system.server.cpu_s(), time.process_time(), time.perf_counter()
            await asyncio.sleep(max(window.stop_at - time.perf_counter(), 0))
            level.server_cpu_s += system.server.cpu_s() - cpu_server
            level.client_cpu_s += time.process_time() - cpu_client
            level.window_s += time.perf_counter() - t0
            after = await metric_values(probe) if system.metrics_model else {}
            await asyncio.gather(*users)
    finally:
        close_all(conns)
    if system.metrics_model:
        count, mean = batch_stats(before, after, system.metrics_model, batch_size_series())
        level.batches += count
        level.batch_rows += round(count * mean)
    level.tokens += round(window.tokens)
    return window.tokens / measure_s


def run_level(
    system: System, model: InProcessModel, concurrency: int, args: argparse.Namespace, rounds: int | None = None
) -> Level:
    """``rounds`` rounds (``args.rounds``, at least 5 at ``BATCH``) of: the in-process limit, then a window on
    ``system`` (which idles meanwhile)."""
    level = Level(concurrency)
    workload = Uniform(args.max_new_tokens)
    # The throughput target is judged at BATCH: more rounds there, for a steadier median.
    if rounds is None:
        rounds = max(args.rounds, 5) if concurrency == BATCH else args.rounds
    for _ in range(rounds):
        limit, _ = model.batched_tps(args.repeats)
        if concurrency == 1:
            times, _ = model.single_times(4 * args.repeats)
            level.single_s += times
        window_tps = asyncio.run(run_window(system, level, workload, args.warmup_s, args.measure_s))
        level.rounds.append((window_tps, limit))
    return level


async def paired_singles(system: System, model: InProcessModel, pairs: int) -> list[tuple[float, float]]:
    """(in-process, system) seconds for the same prompt, one right after the other, ``pairs`` times.

    The in-process call runs at the gateway's thread count (cores less one), the system idles meanwhile, and
    pairing call by call cancels the machine's drift out of the difference."""
    out = []
    (conn,) = await system.connections(1)
    try:
        await system.generate(conn, "warm up", model.max_new_tokens, timeout_s=60.0)
        for i in range(pairs):
            prompt = model.pool[i % BATCH]
            in_process = model.single_at_gateway_threads(prompt)
            started = time.perf_counter()
            r = await system.generate(conn, prompt, model.max_new_tokens, timeout_s=60.0)
            through_system = time.perf_counter() - started
            assert r.status == 200, r.body
            out.append((in_process, through_system))
    finally:
        conn.close()
    model.rest()
    return out
