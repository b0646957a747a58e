"""Peak host memory (RSS) over a window of code, such as one benchmark cell.

On Linux the kernel tracks the peak RSS (VmHWM) and lets a process reset it by writing "5" to
/proc/self/clear_refs, which gives an exact per-cell peak at no cost. Where that is not allowed, a
background thread samples RSS with psutil every few milliseconds (a lower bound on the true peak).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

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
