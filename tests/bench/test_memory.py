import os
import sys
import threading
import time
import types
from types import SimpleNamespace

import pytest

from segbench.bench.memory import PeakDeviceMemory

MIB = 2**20
OTHER_PID = os.getpid() + 1


class FakeNvml(types.ModuleType):
    """A stand-in for nvidia-ml-py's ``pynvml`` whose process memory follows ``readings_mb``, one per query.

    After the readings run out the last one repeats. Another process, larger than ours, is always listed,
    and the device-wide figure is ours plus that process's.
    """

    class NVMLError(Exception):
        pass

    def __init__(self, readings_mb=(100,), *, used=True, listed=True, init_error=False, no_gpu=False):
        super().__init__("pynvml")
        self.readings_mb = list(readings_mb)
        self.used, self.listed = used, listed
        self.init_error, self.no_gpu = init_error, no_gpu
        self.queries = 0
        self.inits = self.shutdowns = 0
        self.lock = threading.Lock()
        self.current_mb = self.readings_mb[0]

    def nvmlInit(self):
        if self.init_error:
            raise self.NVMLError("Driver Not Loaded")
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        if self.no_gpu:
            raise self.NVMLError("Invalid Argument")
        return f"handle{index}"

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        with self.lock:
            self.current_mb = self.readings_mb[min(self.queries, len(self.readings_mb) - 1)]
            self.queries += 1
        processes = [SimpleNamespace(pid=OTHER_PID, usedGpuMemory=9000 * MIB)]
        if self.listed:
            memory = self.current_mb * MIB if self.used else None
            processes.append(SimpleNamespace(pid=os.getpid(), usedGpuMemory=memory))
        return processes

    def nvmlDeviceGetMemoryInfo(self, handle):
        used = (9000 + self.current_mb) * MIB
        return SimpleNamespace(total=80 * 1024 * MIB, used=used, free=80 * 1024 * MIB - used)


def wait_for_queries(nvml, count, deadline_s=2.0):
    """Stay in the window until the sampler has queried ``count`` times (sleeping, as a cell would)."""
    end = time.monotonic() + deadline_s
    while nvml.queries < count and time.monotonic() < end:
        time.sleep(0.01)


def test_reports_the_peak_of_memory_that_rises_then_falls(monkeypatch):
    nvml = FakeNvml([100, 300, 700, 400, 200])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with PeakDeviceMemory(sample_interval_s=0.002) as memory:
        time.sleep(0.05)
        wait_for_queries(nvml, 8)
    assert memory.method == "nvml" and memory.reason is None
    assert memory.process_peak_mb == 700
    assert memory.device_peak_mb == 9700
    assert memory.process_start_mb == 100 and memory.device_start_mb == 9100
    assert memory.samples >= 8
    assert nvml.inits == nvml.shutdowns == 1
    assert not memory._thread.is_alive()


def test_each_window_starts_afresh(monkeypatch):
    nvml = FakeNvml([800, 100])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    measure = PeakDeviceMemory(sample_interval_s=0.002)
    with measure:
        wait_for_queries(nvml, 3)
    assert measure.process_peak_mb == 800
    with measure:
        wait_for_queries(nvml, nvml.queries + 3)
    assert measure.process_peak_mb == 100 and measure.device_peak_mb == 9100


def test_without_nvidia_ml_py_it_measures_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    ran = False
    with PeakDeviceMemory() as memory:
        ran = True
    assert ran
    assert memory.method == "unavailable"
    assert memory.process_peak_mb is None and memory.device_peak_mb is None
    assert "nvidia-ml-py is not installed" in memory.reason


def test_nvml_init_error_leaves_it_unavailable(monkeypatch):
    nvml = FakeNvml(init_error=True)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with PeakDeviceMemory() as memory:
        pass
    assert memory.method == "unavailable"
    assert memory.process_peak_mb is None and memory.device_peak_mb is None
    assert memory.reason == "nvmlInit failed: Driver Not Loaded"
    assert nvml.queries == 0 and nvml.shutdowns == 0


def test_no_gpu_at_the_index_leaves_it_unavailable(monkeypatch):
    nvml = FakeNvml(no_gpu=True)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with PeakDeviceMemory(device_index=3) as memory:
        pass
    assert memory.method == "unavailable" and memory.device_peak_mb is None
    assert memory.reason.startswith("no GPU 3 for NVML")
    assert nvml.shutdowns == 1


def test_used_gpu_memory_unavailable_keeps_the_device_figure(monkeypatch):
    nvml = FakeNvml([100, 500], used=False)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with PeakDeviceMemory(sample_interval_s=0.002) as memory:
        wait_for_queries(nvml, 3)
    assert memory.method == "nvml"
    assert memory.process_peak_mb is None
    assert "usedGpuMemory unavailable" in memory.reason
    assert memory.device_peak_mb == 9500


def test_process_not_listed_says_so(monkeypatch):
    nvml = FakeNvml(listed=False)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with PeakDeviceMemory() as memory:
        pass
    assert memory.process_peak_mb is None and memory.device_peak_mb == 9100
    assert f"pid {os.getpid()}" in memory.reason


def test_an_error_in_the_window_propagates_and_stops_sampling(monkeypatch):
    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    memory = PeakDeviceMemory(sample_interval_s=0.002)
    with pytest.raises(RuntimeError, match="cell failed"), memory:
        raise RuntimeError("cell failed")
    assert not memory._thread.is_alive()
    assert nvml.shutdowns == 1
    queries = nvml.queries
    time.sleep(0.02)
    assert nvml.queries == queries
