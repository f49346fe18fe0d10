"""Values read at scrape time: each ``collect()`` builds fresh metric families, so nothing goes stale and
nothing is kept between scrapes but what a reading needs (the NVML handle state, cached device names).

* ``GatewayStateCollector``: queue depth and capacity, requests in flight, breaker state, live workers and
  ``gateway_model_info``, read from callables the gateway passes in.
* ``GPUCollector``: NVML (``pynvml``, imported lazily) per device; absent when there is no NVML.
* ``TorchMemoryCollector``: torch's CUDA caching-allocator numbers of this process; absent without CUDA.

Register them on the registry you pass around: ``registry.register(GPUCollector())``. Each one has a
``describe()`` so that registering it neither touches NVML/torch nor calls the gateway.
None of them raises from ``collect()``: a scrape that fails loses every metric, a missing family loses one.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.stats import GaugeSnapshot
from gateway.types import ModelInfo

from . import instruments as names

__all__ = [
    "GPUCollector",
    "GatewayStateCollector",
    "TorchMemoryCollector",
    "register_default_collectors",
]

logger = logging.getLogger(__name__)


class GatewayStateCollector(Collector):
    """Per-model gauges of the gateway's own state, read through ``snapshot`` and ``model_info`` at scrape.

    ``gateway_circuit_breaker_state`` is 0 closed, 1 half-open, 2 open, as ``GaugeSnapshot.breaker_state``.
    """

    def __init__(
        self,
        snapshot: Callable[[], Sequence[GaugeSnapshot]],
        model_info: Callable[[], Sequence[ModelInfo]],
    ) -> None:
        self._snapshot = snapshot
        self._model_info = model_info

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        m = list(names.MODEL_LABELS)
        return (
            GaugeMetricFamily(names.QUEUE_DEPTH, "Requests waiting in the admission queue.", labels=m),
            GaugeMetricFamily(names.QUEUE_CAPACITY, "Size of the admission queue.", labels=m),
            GaugeMetricFamily(names.REQUESTS_IN_FLIGHT, "Requests admitted and not yet finished.", labels=m),
            GaugeMetricFamily(
                names.CIRCUIT_BREAKER_STATE, "Circuit breaker state: 0 closed, 1 half-open, 2 open.", labels=m
            ),
            GaugeMetricFamily(names.WORKERS_ALIVE, "Model workers alive.", labels=m),
        )

    @staticmethod
    def _info_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(names.MODEL_INFO, "Loaded models; always 1.", labels=list(names.MODEL_INFO_LABELS))

    def describe(self) -> Iterable[Metric]:
        return [*self._families(), self._info_family()]

    def collect(self) -> Iterable[Metric]:
        out: list[Metric] = []
        try:
            snapshots = list(self._snapshot())
        except Exception:
            # A bug in the gateway's snapshot must not take the whole /metrics page down with it.
            logger.exception("reading the gateway state for /metrics failed")
        else:
            depth, capacity, in_flight, breaker, workers = self._families()
            for s in snapshots:
                depth.add_metric([s.model], s.queue_depth)
                capacity.add_metric([s.model], s.queue_capacity)
                in_flight.add_metric([s.model], s.in_flight)
                breaker.add_metric([s.model], s.breaker_state)
                workers.add_metric([s.model], s.workers_alive)
            out += [depth, capacity, in_flight, breaker, workers]
        try:
            infos = list(self._model_info())
        except Exception:
            logger.exception("reading the model info for /metrics failed")
        else:
            info = self._info_family()
            for i in infos:
                info.add_metric([i.model_id, i.revision, i.task, i.device, i.dtype], 1)
            out.append(info)
        return out


class GPUCollector(Collector):
    """NVML readings per GPU, labelled ``gpu`` (index) and ``name``.

    ``nvml`` is a module with pynvml's interface; by default ``pynvml`` is imported on the first scrape
    (never at import). NVML is initialised once; when the library is missing or ``nvmlInit`` fails, the GPU
    families are absent (not zero, so "no GPU metrics" cannot be read as "idle GPU") and initialisation is
    retried at most every ``retry_interval_s`` on the ``clock``. An ``NVMLError`` from one reading drops that
    one value and counts it in ``gateway_nvml_read_errors_total``. ``gateway_nvml_up`` is 1 while NVML is
    initialised, 0 otherwise.
    """

    def __init__(
        self,
        nvml: Any = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        retry_interval_s: float = 60.0,
    ) -> None:
        # ``Any``: pynvml ships no type information, and tests pass a stand-in module object.
        self._nvml: Any = nvml
        self._clock = clock
        self._retry_interval_s = retry_interval_s
        self._initialized = False
        self._next_attempt: float | None = None  # None: never tried
        self._read_errors = 0
        self._names: dict[int, str] = {}
        # Scrapes may run concurrently (one thread per HTTP request in prometheus_client's server).
        self._lock = threading.Lock()

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        g = list(names.GPU_LABELS)
        return (
            GaugeMetricFamily(names.GPU_MEMORY_USED, "GPU memory in use (all processes).", labels=g),
            GaugeMetricFamily(names.GPU_MEMORY_TOTAL, "GPU memory installed.", labels=g),
            GaugeMetricFamily(
                names.GPU_UTILIZATION, "Fraction of the last sample period a kernel ran (0..1).", labels=g
            ),
            GaugeMetricFamily(names.GPU_TEMPERATURE, "GPU core temperature.", labels=g),
            GaugeMetricFamily(names.GPU_POWER, "GPU power draw.", labels=g),
        )

    @staticmethod
    def _up_family(value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(names.NVML_UP, "1 while NVML is initialised, else 0.", value=value)

    def _errors_family(self) -> CounterMetricFamily:
        return CounterMetricFamily(
            names.NVML_READ_ERRORS, "NVML readings that failed and were left out.", value=self._read_errors
        )

    def describe(self) -> Iterable[Metric]:
        return [*self._families(), self._up_family(0), self._errors_family()]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            try:
                if not self._ensure_initialized():
                    return [self._up_family(0)]
                families = self._read_devices()
                if not self._initialized:  # the device list itself could not be read
                    return [self._up_family(0)]
                return [*families, self._up_family(1), self._errors_family()]
            except Exception:
                logger.exception("GPU metrics collection failed")
                return []

    def _ensure_initialized(self) -> bool:
        if self._initialized:
            return True
        now = self._clock()
        if self._next_attempt is not None and now < self._next_attempt:
            return False
        first = self._next_attempt is None
        self._next_attempt = now + self._retry_interval_s
        try:
            if self._nvml is None:
                import pynvml  # type: ignore[import-untyped]  # lazy: only when metrics are scraped

                self._nvml = pynvml
            self._nvml.nvmlInit()
        except (ImportError, OSError, self._nvml_error()) as exc:
            # Info once, then debug: on a machine without GPU this repeats every retry interval.
            logger.log(
                logging.INFO if first else logging.DEBUG,
                "NVML unavailable, GPU metrics are off (retrying every %.0f s): %s",
                self._retry_interval_s,
                exc,
            )
            return False
        self._initialized = True
        return True

    def _nvml_error(self) -> type[Exception]:
        error: type[Exception] = getattr(self._nvml, "NVMLError", OSError)
        return error

    def _read_devices(self) -> list[Metric]:
        nvml = self._nvml
        error = nvml.NVMLError
        used, total, util, temp, power = families = self._families()
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except error as exc:
            # The driver went away (GPU lost, driver reload): start over after the retry interval.
            logger.warning("NVML device count failed, re-initialising later: %s", exc)
            self._read_errors += 1
            self._initialized = False
            self._next_attempt = self._clock() + self._retry_interval_s
            with contextlib.suppress(error):
                nvml.nvmlShutdown()
            return []

        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            except error as exc:
                self._read_failed(index, "handle", exc)
                continue
            labels = [str(index), self._device_name(handle, index)]
            memory = self._try(index, "memory", nvml.nvmlDeviceGetMemoryInfo, handle)
            if memory is not None:
                used.add_metric(labels, float(memory.used))
                total.add_metric(labels, float(memory.total))
            rates = self._try(index, "utilization", nvml.nvmlDeviceGetUtilizationRates, handle)
            if rates is not None:
                util.add_metric(labels, float(rates.gpu) / 100.0)
            celsius = self._try(index, "temperature", nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            if celsius is not None:
                temp.add_metric(labels, float(celsius))
            milliwatts = self._try(index, "power", nvml.nvmlDeviceGetPowerUsage, handle)
            if milliwatts is not None:
                power.add_metric(labels, float(milliwatts) / 1000.0)
        return list(families)

    def _device_name(self, handle: Any, index: int) -> str:
        # Cached: the name is a label, and a transient failure must not start a new series.
        cached = self._names.get(index)
        if cached is not None:
            return cached
        try:
            raw = self._nvml.nvmlDeviceGetName(handle)
        except self._nvml.NVMLError as exc:
            self._read_failed(index, "name", exc)
            return "unknown"
        name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        self._names[index] = name
        return name

    def _try(self, index: int, what: str, read: Callable[..., Any], *args: Any) -> Any:
        """``read(*args)``, or None (counted, logged) when it raises ``NVMLError``; NVML never returns None."""
        try:
            return read(*args)
        except self._nvml.NVMLError as exc:
            self._read_failed(index, what, exc)
            return None

    def _read_failed(self, index: int, what: str, exc: BaseException) -> None:
        self._read_errors += 1
        logger.debug("NVML %s of GPU %d failed: %s", what, index, exc)

    def fullest_memory(self) -> tuple[float, float] | None:
        """(used, total) bytes of the GPU whose memory is the fullest, read now; None without NVML or a GPU.

        The health score's ``gpu_memory`` component and the status page read it (``StatusBoard(gpu_memory=...)``);
        it shares this collector's NVML state, so it never initialises NVML more often than a scrape would.
        """
        with self._lock:
            try:
                if not self._ensure_initialized():
                    return None
                nvml = self._nvml
                readings = []
                for index in range(int(nvml.nvmlDeviceGetCount())):
                    try:
                        memory = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(index))
                    except nvml.NVMLError as exc:
                        self._read_failed(index, "memory", exc)
                        continue
                    if float(memory.total) > 0:
                        readings.append((float(memory.used), float(memory.total)))
            except Exception as exc:
                logger.debug("reading GPU memory for the health score failed: %s", exc)
                return None
        return max(readings, key=lambda r: r[0] / r[1], default=None)


class TorchMemoryCollector(Collector):
    """torch's CUDA allocator numbers for this process, labelled ``device="cuda:N"``.

    Only when torch is already imported (this collector never imports it: that would cost seconds and
    memory in a process that does not use it) and ``torch.cuda.is_available()``; absent otherwise.
    ``torch.cuda.memory_allocated`` / ``memory_reserved`` read allocator counters and create no CUDA context.
    ``torch_module`` replaces ``sys.modules["torch"]`` (for tests).
    """

    def __init__(
        self, torch_module: Any = None, reports: Callable[[], Iterable[tuple[str, float, float]]] | None = None
    ) -> None:
        self._torch: Any = torch_module
        # With model processes, torch lives there: ``reports`` gives their latest (device, allocated, reserved).
        self._reports = reports

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        d = list(names.TORCH_LABELS)
        return (
            GaugeMetricFamily(names.TORCH_MEMORY_ALLOCATED, "Memory held by live tensors (torch allocator).", labels=d),
            GaugeMetricFamily(names.TORCH_MEMORY_RESERVED, "Memory reserved by torch's caching allocator.", labels=d),
        )

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        try:
            return list(self._collect())
        except Exception:
            logger.exception("torch memory metrics collection failed")
            return []

    def _collect(self) -> Iterator[Metric]:
        if self._reports is not None:
            yield from self._collect_reports(self._reports)
            return
        torch = self._torch if self._torch is not None else sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            return
        allocated, reserved = self._families()
        for index in range(int(torch.cuda.device_count())):
            labels = [f"cuda:{index}"]
            allocated.add_metric(labels, float(torch.cuda.memory_allocated(index)))
            reserved.add_metric(labels, float(torch.cuda.memory_reserved(index)))
        yield allocated
        yield reserved

    def _collect_reports(self, reports: Callable[[], Iterable[tuple[str, float, float]]]) -> Iterator[Metric]:
        totals: dict[str, list[float]] = {}
        for device, allocated, reserved in reports():
            total = totals.setdefault(device, [0.0, 0.0])  # two model processes on one device: both count
            total[0] += allocated
            total[1] += reserved
        if not totals:
            return
        allocated_family, reserved_family = self._families()
        for device, (allocated, reserved) in sorted(totals.items()):
            allocated_family.add_metric([device], allocated)
            reserved_family.add_metric([device], reserved)
        yield allocated_family
        yield reserved_family


def register_default_collectors(registry: CollectorRegistry) -> None:
    """Add prometheus_client's process, platform and GC collectors to ``registry`` (not the global one)."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
