"""The plan of a run: config -> the work units and their cells, decided before anything is built.

Planning is pure (it reads the config, what the backends say of this machine, and what an interrupted run
already wrote), so ``segbench run --dry-run`` prints exactly what a run would do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from segbench.backends import BACKENDS, BackendConfig, BackendSpec
from segbench.bench.resume import FinishedWork
from segbench.config import BenchmarkConfig, ModelEntry, ShapesDatasetConfig
from segbench.errors import ConfigError
from segbench.models.registry import get_spec


@dataclass(frozen=True)
class Cell:
    """One timing cell's input: ``batch`` images of ``height`` x ``width``."""

    height: int
    width: int
    batch: int

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def __str__(self) -> str:
        return f"{self.height}x{self.width} b{self.batch}"


@dataclass(frozen=True)
class Unit:
    """One model x backend entry x precision in one timing pass: its cells, and in the first pass its
    capacity search and numerics check. Its runners are opened for it and closed after it."""

    entry: ModelEntry
    backend: BackendConfig
    spec: BackendSpec
    precision: str
    repeat: int
    cells: tuple[Cell, ...]
    check: bool  # the numerics check still has to run (first pass, not done before a resume)
    find_max_batch: bool
    # Every shape the unit's runners will see (cells and numerics batches): engines build profiles from it.
    served: tuple[Cell, ...] = field(default=())

    @property
    def where(self) -> str:
        return f"{self.entry.name} · {self.backend.name}/{self.backend.device}/{self.precision}"


@dataclass(frozen=True)
class Plan:
    units: tuple[Unit, ...]
    skipped_backends: tuple[dict[str, str], ...]
    timing: bool

    @property
    def total(self) -> int:
        """Progress steps: a cell each; a check-only run, a unit each."""
        if self.timing:
            return sum(len(unit.cells) for unit in self.units)
        return len(self.units)

    def lines(self) -> list[str]:
        """The plan in words, a line per unit (``--dry-run``)."""
        lines = [f"skip {s['backend']} on {s['device']}: {s['reason']}" for s in self.skipped_backends]
        for unit in self.units:
            what = [f"pass {unit.repeat + 1}: {len(unit.cells)} cells"] if self.timing else []
            what += [", ".join(str(cell) for cell in unit.cells)] if unit.cells else []
            what += ["largest batch"] if unit.find_max_batch else []
            what += ["numerics check"] if unit.check else []
            lines.append(f"{unit.where}: {'; '.join(what)}")
        return lines


def config_hash(config: BenchmarkConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def filter_config(
    config: BenchmarkConfig, models: Sequence[str] | None, backends: Sequence[str] | None
) -> None:
    """Narrow the grid to the named models / backends (``--models``, ``--backends``), in place."""
    if models:
        for name in models:
            get_spec(name)  # unknown names list the valid ones
            if name not in {m.name for m in config.models}:
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


def build_plan(config: BenchmarkConfig, timing: bool = True, done: FinishedWork | None = None) -> Plan:
    """The units of a run in execution order: pass by pass, model by model, backend by backend. With
    ``done`` (a resumed run), the cells and checks already written are left out, and so is a unit left
    with nothing to do."""
    done = done or FinishedWork()
    available: list[tuple[BackendConfig, BackendSpec]] = []
    skipped = []
    for backend in config.backends:
        spec = BACKENDS[backend.name]
        reason = spec.unavailable(backend)
        if reason is None:
            available.append((backend, spec))
        else:
            skipped.append({"backend": backend.name, "device": backend.device, "reason": reason})
    check_cells = numerics_cells(config)
    passes = max(repeats(config, entry, timing) for entry in config.models)
    units = []
    for repeat in range(passes):
        for entry in config.models:
            for backend, spec in available:
                if backend.model not in (None, entry.name):
                    continue
                grid = timing_cells(config, entry, backend) if timing else []
                for precision in backend.precisions:
                    in_pass = grid if repeat < repeats(config, entry, timing) else []
                    cells = tuple(
                        c for c in in_pass if not done.has_cell(entry, backend, precision, c, repeat)
                    )
                    check = repeat == 0 and config.numerics.enabled
                    check = check and not done.checked(entry, backend, precision)
                    if not cells and not check:
                        continue  # finished before a resume
                    find = repeat == 0 and timing and config.sweep_for(entry, backend).find_max_batch
                    served = tuple(dict.fromkeys([*cells, *check_cells]))
                    units.append(Unit(entry, backend, spec, precision, repeat, cells, check, find, served))
    return Plan(tuple(units), tuple(skipped), timing)
