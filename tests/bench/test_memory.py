import os
import sys
import threading
import time
import types
from types import SimpleNamespace

import pytest

from segbench.backends.onnxruntime_backend import OnnxRuntimeConfig
from segbench.backends.torch_backend import TorchConfig
from segbench.bench.memory import PeakDeviceMemory, cuda_device_uuid
from segbench.bench.stages import timing

MIB = 2**20
OTHER_PID = os.getpid() + 1


class FakeNvml(types.ModuleType):
    """A stand-in for nvidia-ml-py's ``pynvml`` whose process memory follows ``readings_mb``, one per query.

    After the readings run out the last one repeats. Another process, larger than ours, is always listed,
    and the device-wide figure is ours plus that process's.
    """

    class NVMLError(Exception):
        pass

    def __init__(
        self, readings_mb=(100,), *, used=True, listed=True, init_error=False, no_gpu=False, uuids=()
    ):
        super().__init__("pynvml")
        self.readings_mb = list(readings_mb)
        self.used, self.listed = used, listed
        self.init_error, self.no_gpu = init_error, no_gpu
        self.uuids = list(uuids)  # NVML's devices in PCI order, e.g. "GPU-..." or "MIG-..."
        self.handles = []  # every handle a memory query was made with
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

    def nvmlDeviceGetHandleByUUID(self, uuid):
        # nvidia-ml-py hands the argument to C as a char*: bytes.
        assert isinstance(uuid, bytes), uuid
        if uuid.decode() not in self.uuids:
            raise self.NVMLError("Not Found")
        return f"handle{self.uuids.index(uuid.decode())}"

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        self.handles.append(handle)
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
    with PeakDeviceMemory(device=3) as memory:
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


# CUDA orders GPUs fastest first, NVML by PCI bus: here CUDA's device 0 is NVML's device 1.
FAST = "8f3c2a10-5b6d-4e7f-9a81-0c2d3e4f5a6b"
SLOW = "11111111-2222-3333-4444-555555555555"
NVML_ORDER = [f"GPU-{SLOW}", f"GPU-{FAST}"]


class FakeCUuuid:
    """torch's _CUuuid: str() gives the bare UUID, without NVML's GPU- prefix."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def fake_torch_devices(monkeypatch, uuids):
    """Stand-in device properties for CUDA ordinals 0, 1, ... and the ordinals asked about."""
    import torch

    asked = []

    def properties(ordinal):
        asked.append(ordinal)
        return SimpleNamespace(name="Fake GPU", uuid=FakeCUuuid(uuids[ordinal]))

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    return asked


def test_the_gpu_is_found_by_uuid_not_by_its_cuda_ordinal(monkeypatch):
    nvml = FakeNvml(uuids=NVML_ORDER)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_torch_devices(monkeypatch, [FAST, SLOW])
    runner = SimpleNamespace(config=TorchConfig(device="cuda"))
    device = timing.nvml_device(runner)
    assert device == FAST  # the old rule said NVML index 0: the other GPU
    with PeakDeviceMemory(device) as memory:
        pass
    assert memory.method == "nvml" and set(nvml.handles) == {"handle1"}
    assert timing.nvml_device(SimpleNamespace(config=TorchConfig())) is None  # no sampling on a CPU


def test_onnxruntime_device_id_picks_the_cuda_ordinal(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(uuids=NVML_ORDER))
    asked = fake_torch_devices(monkeypatch, [FAST, SLOW])
    config = OnnxRuntimeConfig(device="cuda", cuda_options={"device_id": 1})
    assert timing.nvml_device(SimpleNamespace(config=config)) == SLOW and asked == [1]


def test_a_mig_slice_is_found_under_its_mig_prefix(monkeypatch):
    nvml = FakeNvml(uuids=[f"GPU-{SLOW}", f"MIG-{FAST}"])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with PeakDeviceMemory(FAST) as memory:
        pass
    assert memory.method == "nvml" and set(nvml.handles) == {"handle1"}
    with PeakDeviceMemory(f"GPU-{FAST}") as missing:
        pass
    assert missing.method == "unavailable" and missing.reason.startswith(f"no GPU GPU-{FAST} for NVML")


def test_without_a_uuid_from_torch_the_visible_devices_entry_stands_in(monkeypatch):
    import torch

    def no_cuda(ordinal):
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(torch.cuda, "get_device_properties", no_cuda)
    assert cuda_device_uuid(0) is None
    runner = SimpleNamespace(config=TorchConfig(device="cuda"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"GPU-{FAST},GPU-{SLOW}")
    assert timing.nvml_device(runner) == f"GPU-{FAST}"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert timing.nvml_device(runner) == 3
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert timing.nvml_device(runner) == 0
