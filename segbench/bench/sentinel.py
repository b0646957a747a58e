"""The noise sentinel: a fixed reference workload timed before, between and after the units of a run.

A cell's latency mixes what the code does with what the machine was doing. The sentinel's workload never
changes, so a change in its time is the machine's: another process taking the CPU, a GPU clocking down, a
neighbour on a shared host. ``compare`` and ``ab`` read the readings and call the performance verdicts of
cells measured while the machine was disturbed ``disturbed``, never a regression or an improvement
(``segbench.reports.noise`` decides that).

The CPU workload is a small fp32 matmul chain on torch's CPU threads, the way the models run there. On a
CUDA device it is a fp16 matmul chain timed with CUDA events, so host jitter does not count; that path
follows torch's documented CUDA API and has not run on a GPU here. One reading costs about 0.1 s on the
2-core CI machine.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Collection

import torch

from segbench.results.records import SentinelReading

CPU_SIZE, CPU_CHAIN = 384, 6  # ~0.7 GFLOP a sample: ~5 ms on 2 cores, past the first-touch and timer noise
CUDA_SIZE, CUDA_CHAIN = 4096, 8  # ~1.1 TFLOP a sample: ~2 ms on an H100's fp16 tensor cores
SAMPLES, WARMUP = 15, 3


def workload_name(device: str) -> str:
    """What a reading timed, written with it: readings of two workloads never compare."""
    if device == "cpu":
        return f"fp32 matmul {CPU_SIZE}^2 x{CPU_CHAIN}, {torch.get_num_threads()} threads"
    return f"fp16 matmul {CUDA_SIZE}^2 x{CUDA_CHAIN}, CUDA events"


class Sentinel:
    """Reads the reference workload of one device: ``read(label)`` times it and returns the reading."""

    def __init__(self, device: str = "cpu", samples: int = SAMPLES) -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"no sentinel workload for device {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("no CUDA device for the sentinel")
        self.device = device
        self.samples = samples
        self.workload = workload_name(device)
        self.host = socket.gethostname()
        generator = torch.Generator().manual_seed(0)
        if device == "cpu":
            self._a = torch.randn(CPU_SIZE, CPU_SIZE, generator=generator)
            self._chain = CPU_CHAIN
        else:
            self._a = torch.randn(CUDA_SIZE, CUDA_SIZE, generator=generator).to("cuda", torch.float16)
            self._chain = CUDA_CHAIN
        self._a = self._a / self._a.shape[0] ** 0.5  # keeps the chain's values bounded
        self._out = [torch.empty_like(self._a), torch.empty_like(self._a)]

    def _chain_once(self) -> None:
        source = self._a
        for index in range(self._chain):
            target = self._out[index % 2]
            torch.mm(source, self._a, out=target)
            source = target

    def _sample_ms(self, clock: Callable[[], float]) -> float:
        if self.device == "cpu":
            start = clock()
            self._chain_once()
            return (clock() - start) * 1e3
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        self._chain_once()
        end.record()
        end.synchronize()
        return float(begin.elapsed_time(end))

    def read(self, label: str, repeat: int | None = None,
             clock: Callable[[], float] = time.perf_counter) -> SentinelReading:  # fmt: skip
        """Time the workload ``samples`` times after a short warm-up (thread pool, caches, clocks)."""
        for _ in range(WARMUP):
            self._sample_ms(clock)
        samples = [round(self._sample_ms(clock), 4) for _ in range(self.samples)]
        return SentinelReading(self.device, self.workload, label, time.time(), samples, repeat, self.host)


def sentinel_devices(devices: Collection[str]) -> list[str]:
    """The devices a run's sentinel reads: the CPU always (every cell's pre- and postprocessing runs there),
    and a CUDA device when the run times one and torch sees it."""
    return ["cpu", *(["cuda"] if "cuda" in devices and torch.cuda.is_available() else [])]
