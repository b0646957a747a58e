"""Timing of one benchmark cell: warm-up, then timed iterations of the full pipeline.

Each iteration times three stages with ``time.perf_counter_ns``: host preprocess, the backend's
``infer`` (which includes any host<->device copies, since runners return host arrays), and the shared
postprocess. End-to-end latency is their sum, so no backend can look faster by leaving a stage out.
On CUDA the torch runner also reports pure compute time from CUDA events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from segbench.bench.backends.base import Runner
from segbench.models.base import SegmentationModel

STAGES = ("preprocess", "infer", "postprocess")
PERCENTILES = (50, 90, 95, 99)


def latency_stats(samples_ms: np.ndarray | list[float]) -> dict[str, float]:
    """mean / p50 / p90 / p95 / p99 / std / min / max of latency samples in milliseconds."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.size == 0:
        raise ValueError("no latency samples")
    stats = {"mean": float(samples.mean())}
    stats.update({f"p{q}": float(np.percentile(samples, q)) for q in PERCENTILES})
    stats.update({"std": float(samples.std()), "min": float(samples.min()), "max": float(samples.max())})
    return stats


@dataclass
class CellMeasurement:
    latency_ms: dict[str, float]
    stages_ms: dict[str, dict[str, float]]
    throughput_ips: float
    iterations: int
    samples_ms: list[float] = field(repr=False)
    compute_ms: dict[str, float] | None = None


def measure_cell(
    model: SegmentationModel, runner: Runner, images: np.ndarray, warmup: int, iterations: int
) -> CellMeasurement:
    """Time ``iterations`` runs of preprocess -> infer -> postprocess on ``images`` after ``warmup`` runs."""
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    image_size = images.shape[1:3]
    for _ in range(warmup):
        model.postprocess(runner.infer(model.preprocess(images)), image_size)
    stage_ns = np.zeros((iterations, len(STAGES)), dtype=np.int64)
    compute_ms: list[float] = []
    clock = time.perf_counter_ns
    loop_start = clock()
    for i in range(iterations):
        t0 = clock()
        feeds = model.preprocess(images)
        t1 = clock()
        outputs = runner.infer(feeds)
        t2 = clock()
        model.postprocess(outputs, image_size)
        t3 = clock()
        stage_ns[i] = (t1 - t0, t2 - t1, t3 - t2)
        device_ms = getattr(runner, "last_compute_ms", None)
        if device_ms is not None:
            compute_ms.append(device_ms)
    loop_s = (clock() - loop_start) / 1e9
    stage_ms = stage_ns / 1e6
    total_ms = stage_ms.sum(axis=1)
    return CellMeasurement(
        latency_ms=latency_stats(total_ms),
        stages_ms={
            stage: {"mean": float(stage_ms[:, i].mean()), "p50": float(np.median(stage_ms[:, i]))}
            for i, stage in enumerate(STAGES)
        },
        throughput_ips=images.shape[0] * iterations / loop_s,
        iterations=iterations,
        samples_ms=[round(v, 4) for v in total_ms.tolist()],
        compute_ms=latency_stats(compute_ms) if compute_ms else None,
    )
