"""NVML memory by GPU UUID, and the measured matmul peaks, on a real GPU."""

from __future__ import annotations

import pytest
import torch

from segbench.backends.torch_backend import TorchConfig, TorchRunner
from segbench.bench import peak
from segbench.bench.memory import PeakDeviceMemory, cuda_device_uuid, nvml_handle
from segbench.bench.stages.timing import nvml_device
from segbench.models.registry import build_model

pytestmark = pytest.mark.gpu


@pytest.fixture
def nvml():
    return pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (pip install 'segbench[gpu]')")


def test_the_memory_window_sees_a_gibibyte_this_process_allocates(nvml):
    """Opened by UUID, as the timing stage opens it: the device's use rises by the block, and so does
    this process's, or the window says why NVML cannot attribute memory to processes here."""
    uuid = cuda_device_uuid(0)
    assert uuid is not None, "torch gives no UUID for cuda:0"
    with PeakDeviceMemory(uuid, sample_interval_s=0.005) as window:
        block = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").fill_(1)
        torch.cuda.synchronize()
        torch.cuda._sleep(50_000_000)  # let the sampler see it (about 30 ms of GPU spin)
        torch.cuda.synchronize()
        del block
    assert window.method == "nvml", window.reason
    rise = window.device_peak_mb - window.device_start_mb
    assert rise >= 1000, (window.device_start_mb, window.device_peak_mb)
    if window.process_peak_mb is None:
        assert window.reason, "no per-process figure and no reason"
    else:
        assert window.process_peak_mb - window.process_start_mb >= 1000


def test_the_timing_stage_names_the_gpu_torch_runs_on(nvml):
    runner = TorchRunner(build_model("unet", "trained"), TorchConfig(device="cuda"), "fp32")
    device = nvml_device(runner)
    nvml.nvmlInit()
    try:
        handle = nvml_handle(nvml, device)
        uuid, name = nvml.nvmlDeviceGetUUID(handle), nvml.nvmlDeviceGetName(handle)
    finally:
        nvml.nvmlShutdown()
    assert isinstance(device, str) and str(uuid).endswith(device)
    assert (name if isinstance(name, str) else name.decode()) == torch.cuda.get_device_name(0)


# Dense datasheet peaks (TFLOP/s) of the SXM parts, the fastest of each family: no measured rate can be
# above them (beyond clock boost noise) without a wrong FLOP count or a timing that misses work.
DATASHEET_TFLOPS = {"H100": {"fp32": 67.0, "tf32": 495.0, "fp16": 990.0, "bf16": 990.0}}
DATASHEET_TFLOPS["H200"] = DATASHEET_TFLOPS["H100"]  # the H100's tensor cores


def test_the_measured_peaks_are_ordered_and_below_the_datasheet():
    before = torch.backends.cuda.matmul.allow_tf32
    rates = {precision: peak.cuda_peak_tflops(precision) for precision in peak.CUDA_PRECISIONS}
    assert torch.backends.cuda.matmul.allow_tf32 == before
    assert rates["tf32"] > 1.5 * rates["fp32"], rates  # else the TF32 switch did nothing
    assert rates["fp16"] > 1.2 * rates["tf32"] and rates["bf16"] > 1.2 * rates["tf32"], rates
    name = torch.cuda.get_device_name(0)
    for family, sheet in DATASHEET_TFLOPS.items():
        if family in name:
            assert all(rates[p] <= 1.05 * sheet[p] for p in sheet), (name, rates)
