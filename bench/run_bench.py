"""Load benchmark of the gateway on the built-in demo causal LM (``make bench``).

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
   429s must come at once (under 20 ms) and nothing may hang.
4. ``/metrics`` scrape latency after the traffic, and whether every series of the contract is there.

Results: a markdown table on stdout and in ``bench/results/latest.md`` (raw numbers in ``latest.json``), and a
plot in ``bench/results/latest.png``.

Each simulated user has its own keep-alive connection (``http_load.Connection``: a ready request written, the
answer parsed by ``httptools``). The load generator runs on the same 2 cores as the gateway, so its CPU is the
gateway's loss, and in a burst its own pace is what the last clients wait for: aiohttp, used before, took about
0.2 ms of CPU per request, which paced a burst of 64 simultaneous requests on the client side (httpx took three
times that). The CPU columns of the report say what each side used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from http_load import Connection

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BATCH = 32  # the in-process batched generate, and the concurrency the throughput target is set at
LEVELS = (1, 8, 32, 64)
# Gateway settings for the run (everything else at its default).
GATEWAY_SETTINGS = {"GATEWAY_MAX_BATCH_SIZE": "32", "GATEWAY_MAX_BATCH_WAIT_MS": "50", "GATEWAY_MAX_QUEUE": "256"}
OVERLOAD_QUEUE = 16
OVERLOAD_CLIENTS = 64
OVERLOAD_SETTINGS = {**GATEWAY_SETTINGS, "GATEWAY_MAX_QUEUE": str(OVERLOAD_QUEUE)}
# The series of the contract's catalogue that exist on every machine (GPU and torch memory gauges need a GPU).
CONTRACT_SERIES = (
    "gateway_requests_total",
    "gateway_request_duration_seconds",
    "gateway_queue_wait_seconds",
    "gateway_inference_duration_seconds",
    "gateway_time_to_first_token_seconds",
    "gateway_time_per_output_token_seconds",
    "gateway_prompt_tokens_total",
    "gateway_generated_tokens_total",
    "gateway_batch_size",
    "gateway_queue_depth",
    "gateway_requests_in_flight",
    "gateway_circuit_breaker_state",
    "gateway_translation_requests_total",
    "gateway_translation_duration_seconds",
    "gateway_model_info",
)


def prompts(n: int) -> list[str]:
    topics = ("the sea", "a robot", "the mountains", "a city at night", "an old map", "the first snow", "a letter")
    return [f"Request {i}: write a short story about {topics[i % len(topics)]}." for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# -- in-process limits ------------------------------------------------------------------------------------


class InProcessModel:
    """The same demo model, loaded here with transformers and driven with no HTTP."""

    def __init__(self, model_dir: Path, max_new_tokens: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"  # as the gateway pads causal LMs
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.max_new_tokens = max_new_tokens
        self.pool = prompts(BATCH)
        self.eos = self.model.generation_config.eos_token_id
        # torch's default, and the gateway's (cores less one): the better of the two counts.
        self.thread_options = sorted({torch.get_num_threads(), max(1, len(os.sched_getaffinity(0)) - 1)})
        for threads in self.thread_options:
            torch.set_num_threads(threads)
            self.generate(self.pool)
            self.generate(self.pool[:1])
        self.rest()

    def generate(self, texts: list[str]) -> tuple[float, int]:
        """(seconds, generated tokens) of one ``generate`` call, tokenizing included."""
        started = time.perf_counter()
        enc = self.tokenizer(texts, return_tensors="pt", padding=True)
        with self.torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        elapsed = time.perf_counter() - started
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        tokens = sum(next((i + 1 for i, t in enumerate(row) if t == self.eos), len(row)) for row in new)
        return elapsed, tokens

    def batched_tps(self, repeats: int) -> tuple[float, int]:
        """(tokens/s, threads) of the best batched generate of ``BATCH`` prompts over ``repeats`` runs."""
        best = (0.0, 0)
        for threads in self.thread_options:
            self.torch.set_num_threads(threads)
            for _ in range(repeats):
                elapsed, tokens = self.generate(self.pool)
                best = max(best, (tokens / elapsed, threads))
        self.rest()
        return best

    def single_times(self, n: int) -> tuple[list[float], int]:
        """(times, threads) of ``n`` single-prompt generates, at the thread count with the lower median."""
        best: tuple[list[float], int] | None = None
        for threads in self.thread_options:
            self.torch.set_num_threads(threads)
            times = [self.generate([self.pool[i % BATCH]])[0] for i in range(n)]
            if best is None or statistics.median(times) < statistics.median(best[0]):
                best = (times, threads)
        self.rest()
        assert best is not None
        return best

    def rest(self) -> None:
        # One thread, and a moment for torch's pool threads to stop spinning before the gateway's turn.
        self.torch.set_num_threads(1)
        time.sleep(0.3)


# -- the gateway ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """``gateway serve`` as a subprocess; its JSON logs go to a file."""

    def __init__(self, cache_dir: Path, log_path: Path, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(
            {
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(self.port),
                "GATEWAY_DEMO_CACHE_DIR": str(cache_dir),
                "GATEWAY_MAX_NEW_TOKENS_LIMIT": "512",
                **settings,
            }
        )
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"], env=env, stdout=self.log, stderr=self.log
        )

    def wait_ready(self, timeout_s: float = 120) -> None:
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited early (code {self.proc.returncode}); see {self.log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("the gateway did not become ready")

    def cpu_s(self) -> float:
        """CPU seconds of the gateway process and its model processes (its children)."""
        pids = [self.proc.pid]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            pids += [int(p) for p in children]
        total = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@contextlib.contextmanager
def gateway(cache_dir: Path, log_path: Path, **settings: str) -> Iterator[Gateway]:
    gw = Gateway(cache_dir, log_path, **settings)
    try:
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()


async def connections(gw: Gateway, n: int) -> list[Connection]:
    """The simulated users' keep-alive connections, opened before any timing starts."""
    conns = [Connection("127.0.0.1", gw.port) for _ in range(n)]
    await asyncio.gather(*(c.open() for c in conns))
    return conns


def close_all(conns: list[Connection]) -> None:
    for c in conns:
        c.close()


async def metric_values(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def batch_stats(before: dict[str, float], after: dict[str, float]) -> tuple[int, float]:
    """(batches, mean batch size) of the generation model between two scrapes."""
    label = '{model="gateway-demo/tiny-causal-lm"}'
    count = after.get("gateway_batch_size_count" + label, 0) - before.get("gateway_batch_size_count" + label, 0)
    rows = after.get("gateway_batch_size_sum" + label, 0) - before.get("gateway_batch_size_sum" + label, 0)
    return int(count), (rows / count if count else 0.0)


@dataclass
class Level:
    """One concurrency level: its gateway windows, each right after an in-process measurement."""

    concurrency: int
    window_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    batch_rows: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    # per round: (gateway tokens/s in the window, in-process batched tokens/s just before it)
    rounds: list[tuple[float, float]] = field(default_factory=list)
    single_s: list[float] = field(default_factory=list)  # in-process single generates (concurrency 1 only)

    @property
    def throughput(self) -> float:
        return self.tokens / self.window_s if self.window_s else 0.0

    @property
    def paired_ratio(self) -> float:
        """Median over rounds of the gateway's tokens/s over the in-process limit measured just before."""
        return statistics.median(g / i for g, i in self.rounds) if self.rounds else float("nan")

    @property
    def mean_tokens(self) -> float:
        return self.tokens / len(self.latencies) if self.latencies else 0.0

    @property
    def mean_batch(self) -> float:
        return self.batch_rows / self.batches if self.batches else 0.0


async def run_window(gw: Gateway, level: Level, max_new_tokens: int, warmup_s: float, measure_s: float) -> float:
    """Closed-loop clients for ``warmup_s + measure_s``; answers that arrive within the last ``measure_s`` count
    (tokens and latencies). Returns the window's tokens/s."""
    pool = prompts(256)
    tokens = 0
    conns = await connections(gw, level.concurrency)
    try:
        start = time.perf_counter()
        measure_from = start + warmup_s
        stop_at = measure_from + measure_s

        async def user(index: int) -> None:
            nonlocal tokens
            k = 0
            while (sent := time.perf_counter()) < stop_at:
                body = {
                    "inputs": pool[(index * 7 + k) % len(pool)],
                    "parameters": {"max_new_tokens": max_new_tokens, "details": True},
                }
                k += 1
                r = await conns[index].post_json("/generate", body, timeout_s=120.0)
                done = time.perf_counter()
                if done < measure_from or done > stop_at:
                    continue
                if r.status != 200:
                    level.errors[str(r.status)] = level.errors.get(str(r.status), 0) + 1
                    continue
                level.latencies.append(done - sent)
                answer = r.json()
                assert isinstance(answer, dict)
                tokens += answer["details"]["generated_tokens"]

        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as probe:
            users = [asyncio.ensure_future(user(i)) for i in range(level.concurrency)]
            await asyncio.sleep(max(measure_from - time.perf_counter(), 0))
            before = await metric_values(probe)
            cpu_server, cpu_client, t0 = gw.cpu_s(), time.process_time(), time.perf_counter()
            await asyncio.sleep(max(stop_at - time.perf_counter(), 0))
            level.server_cpu_s += gw.cpu_s() - cpu_server
            level.client_cpu_s += time.process_time() - cpu_client
            level.window_s += time.perf_counter() - t0
            after = await metric_values(probe)
            await asyncio.gather(*users)
    finally:
        close_all(conns)
    count, mean = batch_stats(before, after)
    level.batches += count
    level.batch_rows += round(count * mean)
    level.tokens += tokens
    return tokens / measure_s


async def paired_singles(gw: Gateway, model: InProcessModel, pairs: int) -> list[tuple[float, float]]:
    """(in-process, gateway) seconds for the same prompt, one right after the other, ``pairs`` times.

    The in-process call runs at the gateway's thread count (cores less one), the gateway idles meanwhile, and
    pairing call by call cancels the machine's drift out of the difference."""
    threads = max(1, len(os.sched_getaffinity(0)) - 1)
    body: dict[str, Any] = {"parameters": {"max_new_tokens": model.max_new_tokens}}
    out = []
    (conn,) = await connections(gw, 1)
    try:
        await conn.post_json("/generate", {"inputs": "warm up", **body}, timeout_s=60.0)
        for i in range(pairs):
            prompt = model.pool[i % BATCH]
            model.torch.set_num_threads(threads)
            in_process, _ = model.generate([prompt])
            started = time.perf_counter()
            r = await conn.post_json("/generate", {"inputs": prompt, **body}, timeout_s=60.0)
            through_gateway = time.perf_counter() - started
            assert r.status == 200, r.body
            out.append((in_process, through_gateway))
    finally:
        conn.close()
    model.rest()
    return out


def run_level(gw: Gateway, model: InProcessModel, concurrency: int, args: argparse.Namespace) -> Level:
    """``args.rounds`` rounds of: the in-process limit, then a gateway window (the gateway idles meanwhile)."""
    level = Level(concurrency)
    # The throughput target is judged at BATCH: more rounds there, for a steadier median.
    for _ in range(max(args.rounds, 5) if concurrency == BATCH else args.rounds):
        limit, _ = model.batched_tps(args.repeats)
        if concurrency == 1:
            times, _ = model.single_times(4 * args.repeats)
            level.single_s += times
        window_tps = asyncio.run(run_window(gw, level, args.max_new_tokens, args.warmup_s, args.measure_s))
        level.rounds.append((window_tps, limit))
    return level


@dataclass
class Overload:
    accepted: int = 0
    rejected: int = 0
    other: dict[str, int] = field(default_factory=dict)
    hung: int = 0
    rejected_latencies: list[float] = field(default_factory=list)
    missing_retry_after: int = 0

    @property
    def ok(self) -> bool:
        return (
            not self.other
            and not self.hung
            and not self.missing_retry_after
            and self.accepted > 0
            and self.rejected > 0
            and max(self.rejected_latencies) < 0.020
        )


async def run_overload(gw: Gateway, max_new_tokens: int, duration_s: float, hang_s: float = 30.0) -> Overload:
    """``OVERLOAD_CLIENTS`` closed-loop clients against a queue of ``OVERLOAD_QUEUE``. A refused client waits as
    ``Retry-After`` says (a polite client) and tries again; an answered one sends its next request at once, so
    the queue stays full and about half of the clients are being refused at any time."""
    result = Overload()
    pool = prompts(256)
    # The connections are opened first: that time must not count as the gateway's.
    conns = await connections(gw, OVERLOAD_CLIENTS)
    try:
        stop_at = time.perf_counter() + duration_s

        async def user(index: int) -> None:
            k = 0
            while time.perf_counter() < stop_at:
                body = {"inputs": pool[(index + k) % len(pool)], "parameters": {"max_new_tokens": max_new_tokens}}
                k += 1
                sent = time.perf_counter()
                try:
                    r = await conns[index].post_json("/generate", body, timeout_s=hang_s)
                except TimeoutError:
                    result.hung += 1
                    continue
                except ConnectionError:
                    result.other["connection closed"] = result.other.get("connection closed", 0) + 1
                    continue
                latency = time.perf_counter() - sent
                if r.status == 200:
                    result.accepted += 1
                elif r.status == 429:
                    result.rejected += 1
                    result.rejected_latencies.append(latency)
                    retry_after = r.headers.get("retry-after")
                    if retry_after is None:
                        result.missing_retry_after += 1
                    await asyncio.sleep(min(float(retry_after or 1), max(stop_at - time.perf_counter(), 0)))
                else:
                    result.other[str(r.status)] = result.other.get(str(r.status), 0) + 1

        await asyncio.gather(*(user(i) for i in range(OVERLOAD_CLIENTS)))
    finally:
        close_all(conns)
    return result


async def scrape_metrics(gw: Gateway, n: int = 50) -> tuple[list[float], list[str]]:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        # One translation, so that the translation series have a sample.
        await client.post("/translate", json={"text": "Hello", "source_lang": "en", "target_lang": "de"})
        times = []
        text = ""
        for _ in range(n):
            started = time.perf_counter()
            r = await client.get("/metrics")
            times.append(time.perf_counter() - started)
            text = r.text
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    # Counters are declared without their ``_total`` suffix in TYPE lines.
    missing = [s for s in CONTRACT_SERIES if s not in families and s.removesuffix("_total") not in families]
    return times, missing


async def warm(gw: Gateway, max_new_tokens: int) -> None:
    async with httpx.AsyncClient(base_url=gw.url, timeout=120) as client:
        for size in (1, BATCH):
            body = {"inputs": "warm up", "parameters": {"max_new_tokens": max_new_tokens}}
            await asyncio.gather(*(client.post("/generate", json=body) for _ in range(size)))


# -- report -----------------------------------------------------------------------------------------------


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


def report(run: Run) -> str:
    args, levels, pairs, overload = run.args, run.levels, run.pairs, run.overload
    rejected_server, scrapes, missing = run.rejected_server, run.scrapes, run.missing
    by_c = {lv.concurrency: lv for lv in levels}
    limits = [i for lv in levels for _, i in lv.rounds]
    best_limit = max(limits)
    ratio = by_c[BATCH].paired_ratio if BATCH in by_c else float("nan")
    singles = by_c[1].single_s if 1 in by_c else []
    single_p50 = statistics.median(singles) if singles else float("nan")
    pair_in = statistics.median(p[0] for p in pairs)
    pair_gw = statistics.median(p[1] for p in pairs)
    overhead = pair_gw - pair_in
    pair_diff = statistics.median(g - i for i, g in pairs)
    rejected = overload.rejected_latencies
    max_rejected = max(rejected) if rejected else float("nan")
    cores = len(os.sched_getaffinity(0))
    lines = [
        "# Gateway benchmark",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {platform.machine()}, {cores} cores, Python "
        f"{platform.python_version()}. Demo causal LM, greedy, max_new_tokens={args.max_new_tokens}. Each level: "
        f"{args.rounds} rounds ({max(args.rounds, 5)} at concurrency {BATCH}) of (in-process limit, then "
        f"{args.warmup_s:g} s warm-up + {args.measure_s:g} s of closed-loop clients on the gateway). Gateway settings: "
        + ", ".join(f"{k}={v}" for k, v in GATEWAY_SETTINGS.items())
        + " (the rest default).",
        "",
        "## Throughput and latency",
        "",
        "| concurrency | requests | tokens/s | in-process limit (round bests) | of the limit, paired | "
        "of the best limit | p50 ms | p95 ms | p99 ms | mean tokens | mean batch | errors | gateway CPU | "
        "client CPU |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lv in levels:
        lat = lv.latencies
        errors = ", ".join(f"{k}: {v}" for k, v in lv.errors.items()) or "0"
        round_limits = "–".join(f"{x:,.0f}" for x in (min(i for _, i in lv.rounds), max(i for _, i in lv.rounds)))
        lines.append(
            f"| {lv.concurrency} | {len(lat)} | {lv.throughput:,.0f} | {round_limits} | {lv.paired_ratio:.2f} | "
            f"{lv.throughput / best_limit:.2f} | {ms(percentile(lat, 0.5))} | {ms(percentile(lat, 0.95))} | "
            f"{ms(percentile(lat, 0.99))} | {lv.mean_tokens:.1f} | {lv.mean_batch:.1f} | {errors} | "
            f"{lv.server_cpu_s / lv.window_s:.0%} | {lv.client_cpu_s / lv.window_s:.0%} |"
        )
    lines += [
        "",
        f"In-process limit: one batched `generate` of {BATCH} prompts, tokens/s, best of {args.repeats} runs at "
        "torch's default thread count and at the gateway's; measured before each gateway window (this machine is "
        f"shared and its speed drifts), best of the whole run {best_limit:,.0f}. Paired: the median over rounds of "
        "the window's tokens/s over the limit measured just before it. Single in-process generate (next to the "
        f"concurrency-1 windows): p50 {ms(single_p50)} ms. CPU columns: share of one core used by the gateway "
        "(its HTTP process and its model processes together) and by this load generator during the windows.",
        "",
        "## Overhead at concurrency 1, paired",
        "",
        f"{len(pairs)} pairs of the same prompt: an in-process `generate` (the gateway's thread count), then the "
        "same request through the gateway (HTTP, JSON, queue, model process, per-step tracking).",
        "",
        "| in-process p50 ms | gateway p50 ms | difference of p50s ms | median of paired differences ms |",
        "| ---: | ---: | ---: | ---: |",
        f"| {ms(pair_in)} | {ms(pair_gw)} | {ms(overhead)} | {ms(pair_diff)} |",
        "",
        f"## Overload: {OVERLOAD_CLIENTS} clients, queue of {OVERLOAD_QUEUE}, {args.overload_s:g} s",
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
        f"{ms(percentile(rejected_server, 0.5))} ms, p99 {ms(percentile(rejected_server, 0.99))} ms, max "
        f"{ms(max(rejected_server) if rejected_server else float('nan'))} ms. The client-side figures above also "
        "hold the load generator's own delays (64 clients in one Python process on the same 2 cores).",
        "",
        "## /metrics after the traffic",
        "",
        f"{len(scrapes)} scrapes: p50 {ms(percentile(scrapes, 0.5))} ms, max {ms(max(scrapes))} ms; "
        + ("every contract series present" if not missing else f"missing: {', '.join(missing)}")
        + " (GPU and torch-memory gauges exist only with a GPU).",
        "",
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
        f"| /metrics under 50 ms with all series | max {ms(max(scrapes))} ms | "
        f"{'yes' if max(scrapes) < 0.050 and not missing else 'no'} |",
        "",
    ]
    return "\n".join(lines)


def summary(run: Run) -> dict[str, Any]:
    """The run's numbers, for comparing runs (``latest.json``)."""
    args, levels, pairs, overload = run.args, run.levels, run.pairs, run.overload
    rejected_server, scrapes, missing = run.rejected_server, run.scrapes, run.missing

    def pct(values: list[float]) -> dict[str, float]:
        return {f"p{q}": round(percentile(values, q / 100) * 1000, 2) for q in (50, 95, 99, 100)}

    return {
        "args": {k: str(v) for k, v in vars(args).items()},
        "gateway_settings": GATEWAY_SETTINGS,
        "levels": [
            {
                "concurrency": lv.concurrency,
                "requests": len(lv.latencies),
                "tokens_per_s": round(lv.throughput, 1),
                "rounds_gateway_vs_in_process_tokens_per_s": [[round(g), round(i)] for g, i in lv.rounds],
                "paired_ratio": round(lv.paired_ratio, 3),
                "latency_ms": pct(lv.latencies),
                "mean_batch": round(lv.mean_batch, 2),
                "mean_tokens": round(lv.mean_tokens, 2),
                "errors": lv.errors,
            }
            for lv in levels
        ],
        "paired_single_ms": {
            "in_process": pct([p[0] for p in pairs]),
            "gateway": pct([p[1] for p in pairs]),
            "median_difference": round(statistics.median(g - i for i, g in pairs) * 1000, 2),
        },
        "overload": {
            "accepted": overload.accepted,
            "rejected": overload.rejected,
            "other": overload.other,
            "hung": overload.hung,
            "missing_retry_after": overload.missing_retry_after,
            "rejected_latency_ms_client": pct(overload.rejected_latencies),
            "rejected_latency_ms_server": pct(rejected_server),
        },
        "metrics_scrape_ms": pct(scrapes),
        "missing_series": missing,
    }


def plot(path: Path, levels: list[Level], max_new_tokens: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = max(i for lv in levels for _, i in lv.rounds)
    singles = [t for lv in levels for t in lv.single_s]
    conc = [lv.concurrency for lv in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.plot(conc, [lv.throughput for lv in levels], "o-", label="gateway")
    left.plot(
        conc,
        [statistics.median(i for _, i in lv.rounds) for lv in levels],
        "x",
        color="tab:green",
        label="in-process limit next to each level (median)",
    )
    left.axhline(best, color="tab:green", linestyle="--", label=f"in-process batched generate of {BATCH} (best)")
    left.axhline(0.9 * best, color="tab:green", linestyle=":", label="0.90 of the best")
    left.set_xscale("log", base=2)
    left.set_xticks(conc, [str(c) for c in conc])
    left.set_xlabel("concurrent clients")
    left.set_ylabel("generated tokens/s")
    left.set_title(f"Throughput (max_new_tokens={max_new_tokens})")
    left.legend(fontsize=8)
    for q, style in ((0.5, "o-"), (0.95, "s--"), (0.99, "^:")):
        right.plot(conc, [percentile(lv.latencies, q) * 1000 for lv in levels], style, label=f"p{int(q * 100)}")
    if singles:
        right.axhline(
            statistics.median(singles) * 1000,
            color="tab:green",
            linestyle="--",
            label="in-process single generate (p50)",
        )
    right.set_xscale("log", base=2)
    right.set_xticks(conc, [str(c) for c in conc])
    right.set_xlabel("concurrent clients")
    right.set_ylabel("latency (ms)")
    right.set_title("Latency")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main -------------------------------------------------------------------------------------------------


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
    return parser.parse_args()


def demo_cache() -> Path:
    """Where the bench keeps its demo models (``GATEWAY_DEMO_CACHE_DIR`` if set)."""
    return Path(os.environ.get("GATEWAY_DEMO_CACHE_DIR", "") or tempfile.gettempdir() + "/llm-gateway-bench-demo")


def overload_run(cache: Path, log: Path, max_new_tokens: int, duration_s: float) -> Overload:
    """The overload on a fresh gateway whose queue holds ``OVERLOAD_QUEUE`` rows, its JSON log in ``log``."""
    with gateway(cache, log, **OVERLOAD_SETTINGS) as gw:
        asyncio.run(warm(gw, max_new_tokens))
        return asyncio.run(run_overload(gw, max_new_tokens, duration_s))


def main() -> int:
    from gateway.demo import DEMO_CAUSAL_ID, ensure_demo_models

    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = demo_cache()
    model_dir = ensure_demo_models(cache)[DEMO_CAUSAL_ID]
    started = time.monotonic()
    model = InProcessModel(model_dir, args.max_new_tokens)
    # This process holds torch and transformers too: out of the collector's sight, so that its full collections
    # (a few hundred ms each) do not land in the clients' latencies (the gateway does the same for its own).
    gc.collect()
    gc.freeze()

    levels = []
    with gateway(cache, args.out / "gateway.log", **GATEWAY_SETTINGS) as gw:
        asyncio.run(warm(gw, args.max_new_tokens))
        for c in (int(x) for x in args.levels.split(",")):
            print(f"concurrency {c} ...", file=sys.stderr)
            levels.append(run_level(gw, model, c, args))
        print("concurrency 1, paired with in-process calls ...", file=sys.stderr)
        pairs = asyncio.run(paired_singles(gw, model, args.pairs))
        scrapes, missing = asyncio.run(scrape_metrics(gw))

    print("overload ...", file=sys.stderr)
    overload = overload_run(cache, args.out / "gateway-overload.log", args.max_new_tokens, args.overload_s)

    rejected_server = server_latencies(args.out / "gateway-overload.log", 429)
    run = Run(args, levels, pairs, overload, rejected_server, scrapes, missing)
    text = report(run)
    text += f"\nWhole run: {time.monotonic() - started:.0f} s.\n"
    print(text)
    (args.out / "latest.md").write_text(text)
    plot(args.out / "latest.png", levels, args.max_new_tokens)
    (args.out / "latest.json").write_text(json.dumps(summary(run), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
