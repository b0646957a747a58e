"""Timing of one benchmark cell: warm-up, then timed iterations of the full pipeline.

Each iteration times three host stages with ``time.perf_counter_ns``: preprocess, the backend's
``infer`` and the shared postprocess. End-to-end latency is their sum, so no backend can look faster by
leaving a stage out. A device runner also reports, per ``infer``, its own split in ``last_stages_ms``:
host-to-device copy, the forward and device-to-host copy; these lie inside ``infer`` and are reported
next to it. The forward is ``compute`` only when CUDA events on the device timed it (torch, TensorRT);
a forward timed on the host (onnxruntime's ``run_with_iobinding``) is ``run_host``, so one column never
mixes device time with host wall time. ``compute_ms`` summarises ``compute`` alone.

Warm-up runs until both ``warmup`` iterations and ``warmup_s`` seconds have passed; measurement until
both ``iterations`` and ``min_duration_s`` (capped at ``max_iterations``). Outlier policy: none are
dropped. Every timed iteration is kept in ``samples_ms`` and every statistic covers them all, so a
hiccup on a shared machine shows in p90/p99 and std instead of vanishing; p50 is the robust summary.
The first warm-up iteration is recorded on its own (``first_iteration_ms``): for the first cell a
runner serves, it is the cold first inference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from segbench.backends.base import Runner
from segbench.models.base import SegmentationModel
from segbench.results.latency import latency_stats

STAGES = ("preprocess", "infer", "postprocess")
# The runner's own split of ``infer`` (``Runner.last_stages_ms``); other keys are ignored.
DEVICE_STAGES = ("h2d", "compute", "run_host", "d2h")


@dataclass(frozen=True)
class TimingPlan:
    """How long to warm up and to measure a cell."""

    warmup: int = 3
    iterations: int = 10
    warmup_s: float = 0.0
    min_duration_s: float = 0.0
    max_iterations: int = 100_000


@dataclass
class CellMeasurement:
    latency_ms: dict[str, float]
    stages_ms: dict[str, dict[str, float]]
    throughput_ips: float
    iterations: int
    warmup: int
    first_iteration_ms: float | None
    samples_ms: list[float] = field(repr=False)
    compute_ms: dict[str, float] | None = None


def _run_once(model: SegmentationModel, runner: Runner, images: np.ndarray) -> None:
    model.postprocess(runner.infer(model.preprocess(images)), images.shape[1:3])


def measure_cell(
    model: SegmentationModel, runner: Runner, images: np.ndarray, plan: TimingPlan
) -> CellMeasurement:
    """Time preprocess -> infer -> postprocess on ``images`` after warming up, as ``plan`` says."""
    if plan.iterations < 1:
        raise ValueError("iterations must be >= 1")
    clock = time.perf_counter_ns
    first_ms = None
    warmed, warm_start = 0, clock()
    while warmed < plan.warmup or (clock() - warm_start) / 1e9 < plan.warmup_s:
        start = clock()
        _run_once(model, runner, images)
        if first_ms is None:
            first_ms = (clock() - start) / 1e6
        warmed += 1
    image_size = images.shape[1:3]
    host_ns: list[tuple[int, int, int]] = []
    device_ms: dict[str, list[float]] = {stage: [] for stage in DEVICE_STAGES}
    loop_start = clock()
    while len(host_ns) < plan.max_iterations and (
        len(host_ns) < plan.iterations or (clock() - loop_start) / 1e9 < plan.min_duration_s
    ):
        t0 = clock()
        feeds = model.preprocess(images)
        t1 = clock()
        outputs = runner.infer(feeds)
        t2 = clock()
        model.postprocess(outputs, image_size)
        t3 = clock()
        host_ns.append((t1 - t0, t2 - t1, t3 - t2))
        for stage, value in (runner.last_stages_ms or {}).items():
            if stage in device_ms and value is not None:
                device_ms[stage].append(value)
    loop_s = (clock() - loop_start) / 1e9
    stage_ms = np.asarray(host_ns, dtype=np.float64) / 1e6
    total_ms = stage_ms.sum(axis=1)
    stages = {
        stage: {"mean": float(stage_ms[:, i].mean()), "p50": float(np.median(stage_ms[:, i]))}
        for i, stage in enumerate(STAGES)
    }
    for stage, values in device_ms.items():
        if values:
            stages[stage] = {"mean": float(np.mean(values)), "p50": float(np.median(values))}
    return CellMeasurement(
        latency_ms=latency_stats(total_ms),
        stages_ms=stages,
        throughput_ips=images.shape[0] * len(host_ns) / loop_s,
        iterations=len(host_ns),
        warmup=warmed,
        first_iteration_ms=first_ms,
        samples_ms=[round(v, 4) for v in total_ms.tolist()],
        compute_ms=latency_stats(device_ms["compute"]) if device_ms["compute"] else None,
    )
