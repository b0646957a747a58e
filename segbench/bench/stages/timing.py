"""The timing stage, a device stage: each cell of a unit measured on an open runner, as a record."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from segbench.backends import Runner
from segbench.bench import peak
from segbench.bench.context import ModelState, RunContext, RunnerPool, StageFailed
from segbench.bench.harness import TimingPlan, measure_cell
from segbench.bench.memory import PeakDeviceMemory, PeakHostMemory, cuda_device_uuid
from segbench.bench.plan import Cell, Unit
from segbench.data.shapes import scene_images
from segbench.results.records import CellRecord, Measurement


class TimingImages:
    """Batches of synthetic scenes for timing, generated once per (batch, height, width)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    def get(self, batch: int, height: int, width: int) -> np.ndarray:
        key = (batch, height, width)
        if key not in self._cache:
            images = scene_images(batch, height, width, seed=self.seed)
            # Keep only the latest batch: cells run size by size, and a large sweep must not pile up images.
            self._cache.clear()
            self._cache[key] = images
        return self._cache[key]


def nvml_device(runner: Runner) -> int | str | None:
    """The GPU a CUDA runner uses, as PeakDeviceMemory takes it, or None for host backends (no NVML
    sampling thread on CPU cells).

    NVML counts GPUs in PCI order and ignores CUDA_VISIBLE_DEVICES, so a CUDA ordinal is no NVML index:
    the device is named by its UUID, which both agree on. Only where torch cannot tell the UUID does the
    CUDA_VISIBLE_DEVICES entry of that ordinal stand in (a UUID there is exact; an index may be wrong on
    machines whose CUDA and PCI orders differ), else the ordinal itself.
    """
    if runner.config.device != "cuda":
        return None
    # onnxruntime's CUDA provider takes its ordinal from cuda_options; torch and TensorRT run on cuda:0.
    options = getattr(runner.config, "cuda_options", None) or {}
    ordinal = int(options.get("device_id", 0))
    uuid = cuda_device_uuid(ordinal)
    if uuid is not None:
        return uuid
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if ordinal < len(visible):
        entry = visible[ordinal]
        return int(entry) if entry.isdigit() else entry
    return ordinal


def measure(
    ctx: RunContext, state: ModelState, runner: Runner, cell: Cell, images: TimingImages
) -> Measurement:
    """Warm up and time the full pipeline on ``cell``; an error is the cell's failure (logged)."""
    timing = state.entry.timing or ctx.config.timing
    plan = TimingPlan(**timing.model_dump(exclude={"repeats"}))
    try:
        batch = images.get(cell.batch, cell.height, cell.width)
        runner.reset_peak_device_memory()
        with PeakHostMemory() as memory, PeakDeviceMemory(nvml_device(runner)) as device:
            measured = measure_cell(state.built, runner, batch, plan)
    except Exception as exc:
        return Measurement.failed(ctx.log.failure(f"{state.entry.name} {runner.config.name} {cell}", exc))
    return Measurement(
        latency_ms=measured.latency_ms,
        throughput_ips=measured.throughput_ips,
        peak_host_mb=memory.peak_mb,
        peak_device_mb=runner.peak_device_memory_mb(),
        peak_device_nvml_process_mb=device.process_peak_mb,
        peak_device_nvml_device_mb=device.device_peak_mb,
        stages_ms=measured.stages_ms,
        compute_ms=measured.compute_ms,
        warmup=measured.warmup,
        iterations=measured.iterations,
        first_iteration_ms=measured.first_iteration_ms,
        samples_ms=measured.samples_ms,
        backend_info=runner.describe(),
    )


def cell_record(
    ctx: RunContext,
    state: ModelState,
    unit: Unit,
    cell: Cell,
    measurement: Measurement,
    opened: dict[str, Any] | None = None,
) -> CellRecord:
    """The record of ``cell``: what ran, how it measured, what opening its runner cost."""
    opened = opened or {}
    sizes = state.size_stats(cell.height, cell.width) if measurement.ok else {}
    subject = state.subject(unit.backend, unit.precision)
    flops_time, timed = flops_time_of(measurement)
    achieved = peak.achieved_tflops(sizes.get("gflops"), cell.batch, timed.get("p50"))
    roof = peak.roof_precision(subject.device, subject.precision, subject.backend_options,
                               measurement.backend_info)  # fmt: skip
    return CellRecord(
        subject=subject,
        height=cell.height,
        width=cell.width,
        batch_size=cell.batch,
        measurement=measurement,
        repeat=unit.repeat,
        env=ctx.provenance,
        cold_start=opened.get("cold_start"),
        artifact=opened.get("artifact"),
        params=sizes.get("params"),
        gflops=sizes.get("gflops"),
        achieved_tflops=achieved,
        flops_time=flops_time if achieved is not None else None,
        peak_fraction=peak.peak_fraction(achieved, ctx.peak_tflops.get(subject.device, {}).get(roof)),
    )


def flops_time_of(measurement: Measurement) -> tuple[str, dict[str, float]]:
    """The time a cell's FLOP rate divides by, the same kind on every backend: the device's compute time
    (CUDA events: torch, TensorRT) where the runner measured one, else the host time of the device run
    (``run_host``: onnxruntime's, which offers no events), else the end-to-end latency (preprocess +
    infer + postprocess), so a host backend is never flattered."""
    if measurement.compute_ms:
        return "compute", measurement.compute_ms
    run_host = (measurement.stages_ms or {}).get("run_host")
    if run_host:
        return "run_host", run_host
    return "end_to_end", measurement.latency_ms or {}


def time_cells(ctx: RunContext, state: ModelState, unit: Unit, pool: RunnerPool) -> Iterator[CellRecord]:
    """The stage itself: each of the unit's cells measured here, on the unit's runners (opened once,
    reused cell after cell), as its record."""
    images = TimingImages(ctx.config.seed)
    for cell in unit.cells:
        ctx.sink.status(f"{unit.where} · {cell}")
        try:
            runner, opened = pool.get(cell.size)
        except StageFailed as exc:
            yield cell_record(ctx, state, unit, cell, Measurement.failed(str(exc)))
            continue
        yield cell_record(ctx, state, unit, cell, measure(ctx, state, runner, cell, images), opened)
