"""The plan of a run: config -> the work units and their cells, decided before anything is built.

Planning is pure (it reads the config, what the backends say of this machine, and what an interrupted run
already wrote), so ``segbench run --dry-run`` prints exactly what a run would do.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segbench.backends import BACKENDS, GRAPH, BackendConfig, BackendSpec
from segbench.backends.base import Precision
from segbench.bench.resume import FinishedWork
from segbench.config import BenchmarkConfig, ModelEntry, ShapesDatasetConfig
from segbench.errors import ConfigError
from segbench.export.tensorrt_readiness import check_tensorrt_readiness
from segbench.models.onnx_graph import graph_precision, load_graph
from segbench.models.registry import MODELS, get_spec
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import RESULTS_FILE
from segbench.results.records import CellRecord
from segbench.sweep import Cell


@dataclass(frozen=True)
class Unit:
    """One model x backend entry x precision in one timing pass: its cells, and in the first pass its
    capacity search and numerics check. Its runners are opened for it and closed after it."""

    entry: ModelEntry
    backend: BackendConfig
    spec: BackendSpec
    precision: Precision
    repeat: int
    cells: tuple[Cell, ...]
    check: bool  # the numerics check still has to run (first pass, not done before a resume)
    find_max_batch: bool
    # Every shape the unit's runners will see (cells and numerics batches): engines build profiles from it.
    served: tuple[Cell, ...] = field(default=())
    skipped: str | None = None  # why it cannot run on this machine (its backend is unavailable)
    notes: tuple[str, ...] = ()  # what its backend says of it before anything is built (plan_notes)

    @property
    def where(self) -> str:
        return f"{self.entry.name} · {self.backend.name}/{self.backend.device}/{self.precision}"


@dataclass(frozen=True)
class Plan:
    units: tuple[Unit, ...]  # what runs, in order
    skipped_backends: tuple[dict[str, str], ...]
    timing: bool
    skipped_units: tuple[Unit, ...] = ()  # what the unavailable backends would have run

    @property
    def total(self) -> int:
        """Progress steps: a cell each; a check-only run, a unit each."""
        if self.timing:
            return sum(len(unit.cells) for unit in self.units)
        return len(self.units)

    def lines(self) -> list[str]:
        """The plan in words, a line per unit, the skipped ones with why (``--dry-run``)."""
        lines = []
        for unit in (*self.units, *self.skipped_units):
            what = [f"pass {unit.repeat + 1}: {len(unit.cells)} cells"] if self.timing else []
            what += [", ".join(str(cell) for cell in unit.cells)] if unit.cells else []
            what += ["largest batch"] if unit.find_max_batch else []
            what += ["numerics check"] if unit.check else []
            where = f"{unit.where} [skipped here: {unit.skipped}]" if unit.skipped else unit.where
            lines.append(f"{where}: {'; '.join(what)}")
            lines += [f"  {note}" for note in unit.notes]
        return lines


def config_hash(config: BenchmarkConfig) -> str:
    """What a run measures, hashed: resume and merge refuse another config. How cells are dispatched
    (``executor:``) is left out, so an inline run and a cluster run of one YAML are one config."""
    return hashlib.sha256(config.model_dump_json(exclude={"executor"}).encode()).hexdigest()[:16]


def filter_config(
    config: BenchmarkConfig, models: Sequence[str] | None, backends: Sequence[str] | None
) -> None:
    """Narrow the grid to the named models / backends (``--models``, ``--backends``), in place."""
    if models:
        for name in models:
            if name not in {m.name for m in config.models}:
                get_spec(name)  # a name segbench does not know lists the valid ones
                present = ", ".join(dict.fromkeys(m.name for m in config.models))
                raise ConfigError(f"--models: {name} is not in the config (it has: {present})")
        config.models = [m for m in config.models if m.name in models]
    if backends:
        for name in backends:
            if name not in BACKENDS:
                raise ConfigError(
                    f"--backends: unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}"
                )
            if name not in {b.name for b in config.backends}:
                present = ", ".join(dict.fromkeys(b.name for b in config.backends))
                raise ConfigError(f"--backends: {name} is not in the config (it has: {present})")
        config.backends = [b for b in config.backends if b.name in backends]


def numerics_cells(config: BenchmarkConfig) -> list[Cell]:
    """The numerics batches' shapes (the full batch and a remainder of 1), when the dataset has one size."""
    dataset = config.numerics.dataset
    if not config.numerics.enabled or not isinstance(dataset, ShapesDatasetConfig):  # images of any size
        return []
    return [Cell(dataset.height, dataset.width, b) for b in sorted({1, config.numerics.batch_size})]


def repeats(config: BenchmarkConfig, entry: ModelEntry, timing: bool) -> int:
    return (entry.timing or config.timing).repeats if timing else 1


def timing_cells(config: BenchmarkConfig, entry: ModelEntry, backend: BackendConfig) -> list[Cell]:
    sweep = config.sweep_for(entry, backend)
    return [Cell(h, w, b) for h, w in sweep.input_sizes for b in sweep.batch_sizes]


def searches_batches(config: BenchmarkConfig, timing: bool) -> bool:
    return timing and any(
        config.sweep_for(entry, backend).find_max_batch
        for entry in config.models
        for backend in config.backends
    )


def build_plan(
    config: BenchmarkConfig, timing: bool = True, done: FinishedWork | None = None, only: Cell | None = None
) -> Plan:
    """The units of a run in execution order: pass by pass, model by model, backend by backend. With
    ``done`` (a resumed run), the cells and checks already written are left out, and so is a unit left
    with nothing to do; with ``only`` (an isolated child), every cell but that one. Either way a unit
    still *serves* its whole grid: an engine's optimization profile covers every cell of the sweep, so a
    resumed or isolated cell runs the engine an inline run builds."""
    done = done or FinishedWork()
    reasons: dict[int, str | None] = {}
    skipped: list[dict[str, str]] = []
    for backend in config.backends:
        reason = reasons[id(backend)] = BACKENDS[backend.name].unavailable(backend)
        if reason is not None:
            skipped.append({"backend": backend.name, "device": backend.device, "reason": reason})
    check_cells = numerics_cells(config)
    passes = max(repeats(config, entry, timing) for entry in config.models)
    units = []
    for repeat in range(passes):
        for entry in config.models:
            for backend in config.backends:
                if backend.model not in (None, entry.name):
                    continue
                grid = timing_cells(config, entry, backend) if timing else []
                for precision in backend.precisions:
                    in_pass = grid if repeat < repeats(config, entry, timing) else []
                    cells = tuple(
                        c for c in in_pass
                        if not done.has_cell(entry, backend, precision, c, repeat) and only in (None, c)
                    )  # fmt: skip
                    check = repeat == 0 and config.numerics.enabled
                    check = check and not done.checked(entry, backend, precision)
                    if not cells and not check:
                        continue  # finished before a resume
                    # An isolated child (``only``) times its cell alone: the parent searches batches.
                    find = repeat == 0 and timing and only is None
                    find = find and config.sweep_for(entry, backend).find_max_batch
                    served = tuple(dict.fromkeys([*in_pass, *check_cells]))
                    reason = reasons[id(backend)] or graph_reason(entry, backend, precision)
                    shapes = [(c.batch, 3, c.height, c.width) for c in served]
                    notes = BACKENDS[backend.name].plan_notes(
                        backend, precision, known_graph_ops(entry, backend), shapes
                    )
                    units.append(Unit(entry, backend, BACKENDS[backend.name], precision, repeat, cells, check,
                                      find, served, reason, notes))  # fmt: skip
    runnable = tuple(unit for unit in units if unit.skipped is None)
    return Plan(runnable, tuple(skipped), timing, tuple(unit for unit in units if unit.skipped))


def known_graph_ops(entry: ModelEntry, backend: BackendConfig) -> frozenset[str] | None:
    """The op types of the graph a unit will run, as far as they are known before export: an ONNX file's
    (the model's or the entry's ``artifact:``), a registered model's declared data-dependent ones (the rest
    of its graph TensorRT takes), None when unknown (a ``module:`` model, an unchecked one)."""
    path = entry.onnx or getattr(backend, "artifact", None)
    if path is not None:
        return _graph_ops(Path(path)) if Path(path).suffix == ".onnx" else None
    spec = MODELS.get(entry.name) if entry.module is None else None
    if spec is None or spec.data_dependent_ops is None:
        return None
    return frozenset(spec.data_dependent_ops)


@functools.cache
def _graph_ops(path: Path) -> frozenset[str]:
    return frozenset(check_tensorrt_readiness(path).op_counts)


@functools.cache
def _carried_precision(path: Path) -> str:
    return graph_precision(load_graph(path))


def graph_reason(entry: ModelEntry, backend: BackendConfig, precision: str) -> str | None:
    """Why an ``onnx:`` model cannot run on this backend entry at this precision, or None: the file is
    the graph, so only graph backends run it, at the precision it carries."""
    if entry.onnx is None:
        return None
    if BACKENDS[backend.name].consumes != GRAPH:
        return f"{entry.onnx.name} is an ONNX file: it runs on graph backends (onnxruntime, tensorrt)"
    carried = _carried_precision(entry.onnx)
    if precision != carried:
        return f"{entry.onnx.name} is an {carried} graph: it runs at {carried} only"
    return None


def estimate_seconds(
    units: Sequence[Unit], config: BenchmarkConfig, measured_ms: dict[tuple, float] | None = None
) -> tuple[float, float, int]:
    """The timing loops' wall time: ``(floor_s, estimate_s, measured)``. Per cell, warm-up and
    measurement run until both their counts and their durations are reached, so a cell costs at least
    ``warmup_s + min_duration_s``; with an earlier run's p50 for the cell (``measured_ms``, keyed like
    :func:`cell_key`) it costs about ``max(warmup x p50, warmup_s) + max(iterations x p50,
    min_duration_s)``. ``measured`` counts the cells that had a p50. Exports, engine builds, model loads and
    numerics checks are not in it."""
    floor = estimate = 0.0
    measured = 0
    for unit in units:
        timing = unit.entry.timing or config.timing
        for cell in unit.cells:
            cell_floor = timing.warmup_s + timing.min_duration_s
            p50 = (measured_ms or {}).get(cell_key(unit, cell))
            floor += cell_floor
            if p50 is None:
                estimate += cell_floor
                continue
            measured += 1
            seconds = p50 / 1000
            estimate += max(timing.warmup * seconds, timing.warmup_s)
            estimate += min(
                max(timing.iterations * seconds, timing.min_duration_s), timing.max_iterations * seconds
            )
    return floor, estimate, measured


def cell_key(unit: Unit, cell: Cell) -> tuple:
    """What matches a planned cell to a measured one: model, backend entry, precision and the cell."""
    options = json.dumps(unit.backend.variant(), sort_keys=True)
    return (unit.entry.name, unit.backend.name, options, unit.backend.device, unit.precision, cell.height,
            cell.width, cell.batch)  # fmt: skip


def measured_latencies(run_dir: Path) -> dict[tuple, float]:
    """The p50 (ms) of every ok cell of an earlier run, keyed like :func:`cell_key` (a cell measured in
    several passes: the median of its passes), for :func:`estimate_seconds`."""
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise ConfigError(f"--estimate-from: {path} not found: give a run directory")
    found: dict[tuple, list[float]] = {}
    for row in read_jsonl(path):
        record = CellRecord.from_dict(row)
        if record.measurement.ok and record.measurement.latency_ms:
            s = record.subject
            key = (s.model, s.backend, json.dumps(s.backend_options, sort_keys=True), s.device, s.precision,
                   record.height, record.width, record.batch_size)  # fmt: skip
            found.setdefault(key, []).append(record.measurement.latency_ms["p50"])
    return {key: float(np.median(values)) for key, values in found.items()}
