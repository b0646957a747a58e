"""The machine's measured peak FLOP/s, once per run, and each cell's achieved FLOP/s against it.

The peak is what one large square matmul reaches: in fp32 on the CPU (torch, with the run's thread
settings) and, on a CUDA device, in fp32, TF32, fp16 and bf16 (CUDA events around a loop of matmuls).
It is a measured ceiling, not the datasheet figure: convolutions rarely reach a large GEMM's rate, so a
cell's ``peak_fraction`` says how far a backend is from what this machine demonstrably does. The GPU path
is written to NVIDIA's documented torch API but has not been run on a GPU here.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

CPU_PRECISIONS: tuple[str, ...] = ("fp32",)
CUDA_PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# 2048^2 fp32 takes ~0.13 s per matmul on 2 cores: big enough to leave the cache-bound regime, small
# enough that a few repeats fit in the ~1 s the run grants it. 8192 keeps an H200's tensor cores busy.
CPU_SIZE, CUDA_SIZE = 2048, 8192
CPU_BUDGET_S = 1.0
# The parent run's measured peak (JSON), handed to an isolated child so the peak is measured once per run
# and every cell's peak_fraction divides by the same figure.
PEAKS_ENV = "SEGBENCH_PEAK_TFLOPS"


def matmul_flops(n: int) -> float:
    """FLOPs of one n x n by n x n matmul (a multiply-add counts 2, as the model counts do)."""
    return 2.0 * n**3


def rate_tflops(flops: float, seconds: float) -> float:
    """FLOPs over seconds, in TFLOP/s."""
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {seconds}")
    return flops / seconds / 1e12


def best_rate_tflops(flops: float, durations_s: Iterable[float]) -> float:
    """The rate of the fastest repeat: noise on a shared machine only ever adds time, so the minimum
    is the estimate of what the hardware does."""
    durations = list(durations_s)
    if not durations:
        raise ValueError("no durations measured")
    return rate_tflops(flops, min(durations))


def cpu_peak_tflops(
    n: int = CPU_SIZE,
    budget_s: float = CPU_BUDGET_S,
    min_repeats: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """fp32 matmul TFLOP/s on the CPU with torch's current thread count: one warm-up, then repeats until
    both ``min_repeats`` and ``budget_s`` are reached; the fastest counts."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up: thread pool start, page faults of ``out``
    durations: list[float] = []
    start = clock()
    while len(durations) < min_repeats or clock() - start < budget_s:
        t0 = clock()
        torch.mm(a, b, out=out)
        durations.append(clock() - t0)
    return best_rate_tflops(matmul_flops(n), durations)


def cuda_peak_tflops(precision: str, n: int = CUDA_SIZE, iterations: int = 20, repeats: int = 3) -> float:
    """Matmul TFLOP/s on the current CUDA device at ``precision`` (fp32 with TF32 off, tf32 with it on,
    fp16, bf16), timed with CUDA events around ``iterations`` back-to-back matmuls; the fastest of
    ``repeats`` loops counts. The TF32 switch is restored afterwards."""
    if precision not in _DTYPES:
        raise ValueError(f"no peak for precision {precision!r}; one of {', '.join(_DTYPES)}")
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        a = torch.randn(n, n, device="cuda", dtype=_DTYPES[precision])
        b = torch.randn(n, n, device="cuda", dtype=_DTYPES[precision])
        out = torch.empty_like(a)
        for _ in range(3):  # warm-up: cuBLAS handle, kernel selection, clocks ramping up
            torch.mm(a, b, out=out)
        torch.cuda.synchronize()
        durations = []
        for _ in range(repeats):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(iterations):
                torch.mm(a, b, out=out)
            end.record()
            end.synchronize()
            durations.append(begin.elapsed_time(end) / 1e3 / iterations)
        del a, b, out
        torch.cuda.empty_cache()
        return best_rate_tflops(matmul_flops(n), durations)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def measure_peaks(devices: Iterable[str]) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """``{device: {precision: TFLOP/s}}`` for the devices a run uses, and why any entry is missing
    (``{"device/precision": error}``); a failed measurement never stops the run."""
    peaks: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    for device in sorted(set(devices)):
        if device == "cpu":
            precisions = CPU_PRECISIONS
        elif device == "cuda" and torch.cuda.is_available():
            precisions = CUDA_PRECISIONS
        else:
            continue  # no torch view of this device: its cells get no peak_fraction
        threads = torch.get_num_threads()
        for precision in precisions:
            try:
                peaks.setdefault(device, {})[precision] = _measured(device, precision, threads)
            except Exception as exc:  # a peak is context, not a result: note it and go on
                errors[f"{device}/{precision}"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return peaks, errors


@functools.cache
def _measured(device: str, precision: str, threads: int) -> float:
    """One measurement per device, precision and thread count in a process: a CLI run is one process,
    and a process running many (the tests) need not pay for it each time."""
    rate = cpu_peak_tflops() if device == "cpu" else cuda_peak_tflops(precision)
    return round(rate, 4)


def roof_precision(
    device: str,
    precision: str,
    backend_options: Mapping[str, Any],
    backend_info: Mapping[str, Any] | None = None,
) -> str:
    """The peak a cell is judged against: its own precision on a GPU, except an fp32 CUDA cell that
    runs at TF32, whose convolutions and matmuls use TF32 tensor cores: asked for (torch's ``tf32``
    option), or forced by the backend as its ``backend_info`` says (onnxruntime's TensorRT provider),
    which wins. On the CPU only fp32 is measured and every cell is judged against it (an fp16 graph
    runs emulated in fp32 there)."""
    if device == "cpu":
        return "fp32"
    tf32 = (backend_info or {}).get("tf32", backend_options.get("tf32"))
    if device == "cuda" and precision == "fp32" and tf32:
        return "tf32"
    return precision


def achieved_tflops(gflops: float | None, batch: int, compute_ms: float | None) -> float | None:
    """The model's FLOPs for ``batch`` images over one batch's time, in TFLOP/s (None without both)."""
    if gflops is None or compute_ms is None or compute_ms <= 0:
        return None
    return gflops * 1e9 * batch / (compute_ms / 1e3) / 1e12


def peak_fraction(achieved: float | None, peak: float | None) -> float | None:
    """Achieved over peak TFLOP/s (None without both)."""
    if achieved is None or not peak:
        return None
    return achieved / peak
