"""Peak host memory (RSS) and peak device memory (NVML) over a window of code, such as one benchmark cell.

Host: on Linux the kernel tracks the peak RSS (VmHWM) and lets a process reset it by writing "5" to
/proc/self/clear_refs, which gives an exact per-cell peak at no cost. Where that is not allowed, a
background thread samples RSS with psutil every few milliseconds (a lower bound on the true peak).
Device: see PeakDeviceMemory. NVML numbers GPUs in PCI bus order and ignores CUDA_VISIBLE_DEVICES, while
CUDA (and so torch and onnxruntime) numbers the visible GPUs fastest first by default: the GPU a runner uses
is found by its UUID (``cuda_device_uuid``, ``nvmlDeviceGetHandleByUUID``), never by its CUDA ordinal.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm_hwm_mb() -> float | None:
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def _reset_vm_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakHostMemory:
    """Context manager; ``peak_mb`` holds the process's peak RSS in MiB inside the window afterwards."""

    def __init__(self, sample_interval_s: float = 0.005) -> None:
        self.sample_interval_s = sample_interval_s
        self.peak_mb: float | None = None
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakHostMemory:
        if _vm_hwm_mb() is not None and _reset_vm_hwm():
            self.method = "vmhwm"
        else:
            self.method = "sampled"
            self._process = psutil.Process()
            self.peak_mb = self._process.memory_info().rss / 2**20
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.sample_interval_s):
            self.peak_mb = max(self.peak_mb or 0.0, self._process.memory_info().rss / 2**20)

    def __exit__(self, *exc_info: object) -> None:
        if self.method == "vmhwm":
            self.peak_mb = _vm_hwm_mb()
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_mb = max(self.peak_mb or 0.0, self._process.memory_info().rss / 2**20)


def _import_nvml() -> ModuleType | None:
    try:
        return importlib.import_module("pynvml")
    except (ImportError, OSError):
        return None


def cuda_device_uuid(ordinal: int) -> str | None:
    """The UUID of CUDA device ``ordinal`` as torch reports it (``get_device_properties(i).uuid``: 36 hex
    characters and dashes, without NVML's ``GPU-`` prefix), or None where torch cannot tell (no CUDA)."""
    try:
        import torch

        uuid = getattr(torch.cuda.get_device_properties(ordinal), "uuid", None)
    except Exception:  # no CUDA build, no device, a driver error: NVML gets nothing to match
        return None
    text = str(uuid).strip() if uuid is not None else ""
    return text or None


def nvml_handle(nvml: Any, device: int | str) -> Any:
    """NVML's handle of ``device``: an NVML index (PCI order), or a UUID with or without its ``GPU-`` /
    ``MIG-`` prefix (torch's has none; a MIG slice's UUID takes ``MIG-``). Raises NVML's error when no
    GPU matches."""
    if isinstance(device, int):
        return nvml.nvmlDeviceGetHandleByIndex(device)
    candidates = [device] if device.startswith(("GPU-", "MIG-")) else [f"GPU-{device}", f"MIG-{device}"]
    for candidate in candidates[:-1]:
        try:
            # Bytes: nvidia-ml-py passes them to C as they are (its str handling varies by version).
            return nvml.nvmlDeviceGetHandleByUUID(candidate.encode())
        except Exception:
            continue
    return nvml.nvmlDeviceGetHandleByUUID(candidates[-1].encode())


class PeakDeviceMemory:
    """Context manager; peak GPU memory in MiB over a window as NVML (nvidia-ml-py) reports it.

    Afterwards ``process_peak_mb`` is the most device memory this process held (its NVML compute-process
    entry, ``usedGpuMemory``: the CUDA context plus everything any framework in the process has reserved,
    whatever the backend) and ``device_peak_mb`` the most memory in use on the whole device, by any process.
    NVML keeps no per-process peak, so a background thread samples both every ``sample_interval_s`` (and
    once on entry and exit): the figures are lower bounds on the true peaks, which can miss a spike shorter
    than the interval. ``process_start_mb`` and ``device_start_mb`` are the first samples, for the increase
    over the window.

    ``device`` is the GPU: its UUID (from ``cuda_device_uuid``, the reliable way) or an NVML index (PCI
    order); None for a host-only window. Where there is nothing to measure (nvidia-ml-py missing, NVML
    failing to initialise, no such GPU) the window runs untouched: the figures stay None, ``method`` is
    "unavailable" and ``reason`` says why. It never raises. When NVML cannot attribute memory to this
    process (usedGpuMemory unavailable, as under WSL or MIG, or this process not listed, as in a
    container's PID namespace) ``process_peak_mb`` stays None, ``device_peak_mb`` is still measured, and
    ``reason`` says why.
    """

    def __init__(self, device: int | str | None = 0, sample_interval_s: float = 0.005) -> None:
        self.device = device  # None: a host-only window, nothing to sample
        self.sample_interval_s = sample_interval_s
        self.process_peak_mb: float | None = None
        self.device_peak_mb: float | None = None
        self.process_start_mb: float | None = None
        self.device_start_mb: float | None = None
        self.method = "unavailable"
        self.reason: str | None = None
        self.samples = 0
        self._nvml: Any = None
        self._handle: Any = None
        self._pid = os.getpid()
        self._process_problem: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakDeviceMemory:
        self.process_peak_mb = self.device_peak_mb = None
        self.process_start_mb = self.device_start_mb = None
        self.method, self.reason, self.samples = "unavailable", None, 0
        self._process_problem = None
        self._pid = os.getpid()
        self._stop.clear()
        self._thread = None
        if self.device is None:
            self.reason = "no GPU in use"
            return self
        nvml = _import_nvml()
        if nvml is None:
            self.reason = "nvidia-ml-py is not installed (pip install 'segbench[gpu]')"
            return self
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError (no driver, no library) or a broken install
            self.reason = f"nvmlInit failed: {exc}"
            return self
        try:
            self._handle = nvml_handle(nvml, self.device)
        except Exception as exc:
            self.reason = f"no GPU {self.device} for NVML: {exc}"
            self._shutdown(nvml)
            return self
        self._nvml = nvml
        self.method = "nvml"
        self._sample()
        self.process_start_mb, self.device_start_mb = self.process_peak_mb, self.device_peak_mb
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self._thread.start()
        return self

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.sample_interval_s):
            self._sample()

    def _sample(self) -> None:
        nvml, handle = self._nvml, self._handle
        self.samples += 1
        try:
            used = nvml.nvmlDeviceGetMemoryInfo(handle).used
        except Exception:  # an NVMLError for this query: keep the other figure
            used = None
        if used is not None:
            self.device_peak_mb = max(self.device_peak_mb or 0.0, used / 2**20)
        try:
            processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except Exception as exc:
            self._process_problem = f"nvmlDeviceGetComputeRunningProcesses failed: {exc}"
            return
        for process in processes:
            if getattr(process, "pid", None) != self._pid:
                continue
            memory = getattr(process, "usedGpuMemory", None)
            if memory is None:
                self._process_problem = (
                    "NVML does not report per-process memory here (usedGpuMemory unavailable, "
                    "as under WSL, MIG or vGPU)"
                )
            else:
                self.process_peak_mb = max(self.process_peak_mb or 0.0, memory / 2**20)
            return

    def _shutdown(self, nvml: Any) -> None:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()

    def __exit__(self, *exc_info: object) -> None:
        if self.method != "nvml":
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self._shutdown(self._nvml)
        self._nvml = self._handle = None
        if self.process_peak_mb is None:
            self.reason = self._process_problem or (
                f"this process (pid {self._pid}) held no CUDA context on GPU {self.device} in the "
                "window, or NVML lists it under another pid (a container's PID namespace)"
            )
        if self.device_peak_mb is None:
            problem = "nvmlDeviceGetMemoryInfo failed: no device-wide figure"
            self.reason = f"{self.reason}; {problem}" if self.reason else problem
