"""The model processes' own resident memory, CPU time and threads, read from ``/proc/<pid>/stat`` at scrape time.

With ``GATEWAY_MODEL_PROCESS=true`` (the default) torch runs in one child process per model, which the gateway
process's ``process_*`` series do not see; this collector reports each child under its ``model`` label. In
thread mode the model runs inside the gateway process, and ``pids`` gives the gateway's own pid for it: the
figures then include the HTTP side too (and two models in one process report the same numbers), which is why
dashboards and alerts read them per model and never sum them over models.

A pid that is gone (the process died and is being replaced) is left out of that scrape, not reported as zero. The
CPU counter restarts from zero with a new process, which Prometheus's ``rate`` reads as a counter reset.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import instruments as names

__all__ = ["ModelProcessCollector", "ProcessStat", "read_process_stat"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessStat:
    resident_bytes: int
    cpu_seconds: float
    threads: int


def read_process_stat(pid: int, proc_root: Path = Path("/proc")) -> ProcessStat | None:
    """``/proc/<pid>/stat`` of a live process, or None when it is gone. Linux only (None elsewhere)."""
    try:
        text = (proc_root / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or parentheses: split after the
    # last ')'. The fields after it start at field 3 (state); see proc(5).
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15, in clock ticks
    threads = int(fields[17])  # field 20
    rss_pages = int(fields[21])  # field 24
    ticks = os.sysconf("SC_CLK_TCK")
    return ProcessStat(rss_pages * os.sysconf("SC_PAGE_SIZE"), (utime + stime) / ticks, threads)


class ModelProcessCollector(Collector):
    """``pids()`` gives model id -> pid of the process its model runs in (None: no process right now)."""

    def __init__(self, pids: Callable[[], Mapping[str, int | None]], proc_root: Path = Path("/proc")) -> None:
        self._pids = pids
        self._proc_root = proc_root

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        m = list(names.MODEL_LABELS)
        return (
            GaugeMetricFamily(names.MODEL_PROCESS_RESIDENT_MEMORY, "Resident memory of the model process.", labels=m),
            CounterMetricFamily(
                names.MODEL_PROCESS_CPU, "User and system CPU time of the model process (since it started).", labels=m
            ),
            GaugeMetricFamily(names.MODEL_PROCESS_THREADS, "Threads of the model process.", labels=m),
        )

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        try:
            pids = dict(self._pids())
        except Exception:
            logger.exception("reading the model process ids for /metrics failed")
            return []
        memory, cpu, threads = self._families()
        for model, pid in sorted(pids.items()):
            stat = read_process_stat(pid, self._proc_root) if pid else None
            if stat is None:
                continue
            memory.add_metric([model], float(stat.resident_bytes))
            cpu.add_metric([model], stat.cpu_seconds)
            threads.add_metric([model], float(stat.threads))
        return [memory, cpu, threads]
