"""The run's plot (``latest.png``): throughput and latency percentiles by concurrency, against the in-process
limit."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.report import percentile
from bench.scenarios.uniform import Level
from bench.workload import BATCH


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
