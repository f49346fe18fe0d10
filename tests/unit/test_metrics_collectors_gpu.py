"""GPUCollector against NVML.

The fake NVML below is the only fake in these tests: it stands in, at the lowest layer (the ``pynvml`` module
itself), for a GPU and driver that cannot exist on this machine. Everything above it (initialisation, retry,
error handling, families, labels, unit conversion) is the real collector code. The last test runs the real
``pynvml`` on this GPU-less machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrics import GPUCollector
from tests.clock import ManualClock

GPU_FAMILIES = {
    "gateway_gpu_memory_used_bytes",
    "gateway_gpu_memory_total_bytes",
    "gateway_gpu_utilization_ratio",
    "gateway_gpu_temperature_celsius",
    "gateway_gpu_power_watts",
}


class FakeNVMLError(Exception):
    pass


@dataclass
class _Memory:
    used: int
    total: int


@dataclass
class _Utilization:
    gpu: int
    memory: int = 0


@dataclass
class _Device:
    name: str | bytes
    used: int
    total: int
    util: int
    celsius: int
    milliwatts: int


@dataclass
class FakeNVML:
    """The subset of pynvml's module interface that GPUCollector uses."""

    devices: list[_Device]
    init_fails: bool = False
    failing: set[tuple[int, str]] = field(default_factory=set)  # (device index, reading)
    init_calls: int = 0

    NVMLError = FakeNVMLError
    NVML_TEMPERATURE_GPU = 0

    def _check(self, index: int, what: str) -> _Device:
        if (index, what) in self.failing:
            raise FakeNVMLError(f"{what} of {index} failed")
        return self.devices[index]

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_fails:
            raise FakeNVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._check(index, "handle")
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        return self._check(handle, "name").name

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Memory:
        d = self._check(handle, "memory")
        return _Memory(used=d.used, total=d.total)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Utilization:
        return _Utilization(gpu=self._check(handle, "utilization").util)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._check(handle, "temperature").celsius

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._check(handle, "power").milliwatts


def two_gpus(**kwargs: Any) -> FakeNVML:
    return FakeNVML(
        devices=[
            _Device("NVIDIA H100 80GB HBM3", 10 * 2**30, 80 * 2**30, 37, 45, 123_456),
            _Device(b"NVIDIA A10G", 2**30, 24 * 2**30, 100, 71, 300_000),
        ],
        **kwargs,
    )


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """family name -> {sorted label pairs: value}"""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        values = out.setdefault(family.name, {})
        for sample in family.samples:
            values[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def key(gpu: str, name: str) -> tuple[tuple[str, str], ...]:
    return (("gpu", gpu), ("name", name))


def test_two_devices_all_families_labels_and_units() -> None:
    registry = CollectorRegistry()
    registry.register(GPUCollector(nvml=two_gpus()))
    got = scrape(registry)

    assert GPU_FAMILIES <= got.keys()
    h100, a10 = key("0", "NVIDIA H100 80GB HBM3"), key("1", "NVIDIA A10G")  # bytes name decoded
    assert got["gateway_gpu_memory_used_bytes"] == {h100: 10 * 2**30, a10: 2**30}
    assert got["gateway_gpu_memory_total_bytes"] == {h100: 80 * 2**30, a10: 24 * 2**30}
    assert got["gateway_gpu_utilization_ratio"] == {h100: 0.37, a10: 1.0}
    assert got["gateway_gpu_temperature_celsius"] == {h100: 45.0, a10: 71.0}
    assert got["gateway_gpu_power_watts"] == {h100: 123.456, a10: 300.0}
    assert got["gateway_nvml_up"] == {(): 1.0}
    assert got["gateway_nvml_read_errors"] == {(): 0.0}


def test_one_failing_reading_drops_only_that_value() -> None:
    nvml = two_gpus(failing={(1, "power"), (0, "memory")})
    registry = CollectorRegistry()
    registry.register(GPUCollector(nvml=nvml))
    got = scrape(registry)

    h100, a10 = key("0", "NVIDIA H100 80GB HBM3"), key("1", "NVIDIA A10G")
    assert got["gateway_gpu_power_watts"] == {h100: 123.456}
    assert got["gateway_gpu_memory_used_bytes"] == {a10: 2**30}
    assert got["gateway_gpu_memory_total_bytes"] == {a10: 24 * 2**30}
    assert got["gateway_gpu_utilization_ratio"] == {h100: 0.37, a10: 1.0}
    assert got["gateway_gpu_temperature_celsius"] == {h100: 45.0, a10: 71.0}
    assert got["gateway_nvml_read_errors"] == {(): 2.0}


def test_failing_handle_skips_that_device() -> None:
    registry = CollectorRegistry()
    registry.register(GPUCollector(nvml=two_gpus(failing={(0, "handle")})))
    got = scrape(registry)
    assert got["gateway_gpu_temperature_celsius"] == {key("1", "NVIDIA A10G"): 71.0}


def test_name_is_cached_so_a_transient_failure_keeps_the_series() -> None:
    nvml = two_gpus()
    registry = CollectorRegistry()
    registry.register(GPUCollector(nvml=nvml))
    scrape(registry)
    nvml.failing.add((0, "name"))
    got = scrape(registry)
    assert key("0", "NVIDIA H100 80GB HBM3") in got["gateway_gpu_temperature_celsius"]


def test_init_failure_means_absent_families_and_a_throttled_retry() -> None:
    nvml = two_gpus(init_fails=True)
    clock = ManualClock(start=1000.0)
    collector = GPUCollector(nvml=nvml, clock=clock, retry_interval_s=60.0)
    registry = CollectorRegistry()
    registry.register(collector)
    assert nvml.init_calls == 0  # registering does not touch NVML

    got = scrape(registry)
    assert not GPU_FAMILIES & got.keys()
    assert got["gateway_nvml_up"] == {(): 0.0}
    assert nvml.init_calls == 1

    clock.now += 59.0
    scrape(registry)
    scrape(registry)
    assert nvml.init_calls == 1  # within the retry interval: not retried

    nvml.init_fails = False
    clock.now += 1.0
    got = scrape(registry)
    assert nvml.init_calls == 2
    assert GPU_FAMILIES <= got.keys()
    assert got["gateway_nvml_up"] == {(): 1.0}

    scrape(registry)
    assert nvml.init_calls == 2  # initialised once, not per scrape


def test_missing_library_does_not_raise() -> None:
    class NoLibrary(FakeNVML):
        def nvmlInit(self) -> None:
            self.init_calls += 1
            raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    nvml = NoLibrary(devices=[])
    collector = GPUCollector(nvml=nvml)
    assert [m.name for m in collector.collect()] == ["gateway_nvml_up"]


def test_unexpected_exception_does_not_raise_from_collect() -> None:
    class Broken(FakeNVML):
        def nvmlDeviceGetCount(self) -> int:
            raise RuntimeError("not an NVMLError")

    assert list(GPUCollector(nvml=Broken(devices=[])).collect()) == []


def test_real_pynvml_without_gpu_yields_no_gpu_families() -> None:
    # This machine has pynvml installed but no NVIDIA driver or GPU: the real library path.
    registry = CollectorRegistry()
    registry.register(GPUCollector())
    got = scrape(registry)
    assert not [name for name in got if name.startswith("gateway_gpu_")]
    assert got["gateway_nvml_up"] == {(): 0.0}


def test_fullest_memory_is_the_gpu_with_the_largest_used_share() -> None:
    # 10 of 80 GiB (12.5%) beats 1 of 24 GiB (4.2%), though the second is listed later.
    assert GPUCollector(nvml=two_gpus()).fullest_memory() == (10 * 2**30, 80 * 2**30)
    # A device whose memory cannot be read is left out (and counted), not read as empty.
    collector = GPUCollector(nvml=two_gpus(failing={(0, "memory")}))
    assert collector.fullest_memory() == (2**30, 24 * 2**30)
    assert scrape_errors(collector) == 2.0  # this reading and the scrape's own


def scrape_errors(collector: GPUCollector) -> float:
    registry = CollectorRegistry()
    registry.register(collector)
    return scrape(registry)["gateway_nvml_read_errors"][()]


def test_fullest_memory_without_nvml_or_gpu_is_none() -> None:
    class NoLibrary(FakeNVML):
        def nvmlInit(self) -> None:
            raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    assert GPUCollector(nvml=NoLibrary(devices=[])).fullest_memory() is None
    assert GPUCollector(nvml=FakeNVML(devices=[])).fullest_memory() is None
    assert GPUCollector().fullest_memory() is None  # the real pynvml on this GPU-less machine
