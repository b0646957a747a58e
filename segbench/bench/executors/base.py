"""How a unit's timing cells are executed: in this process, in a child process per cell, or on the
machines of a Ray cluster. An executor yields one record per cell; the pipeline writes them, in whatever
order they come. A ``concurrent`` executor is handed every unit at once (``run_units``) and yields each
cell's record as it arrives; the pipeline then runs the other stages (capacity, numerics) itself."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar

from segbench.bench.context import ModelState, RunContext, RunnerPool
from segbench.bench.plan import Unit
from segbench.config import BenchmarkConfig, ExecutorConfig
from segbench.results.records import CellRecord


class Executor(ABC):
    name: ClassVar[str]
    # True: the pipeline calls run_units with every unit before any other stage (units run side by side).
    concurrent: ClassVar[bool] = False

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def run_cells(self, state: ModelState, unit: Unit, pool: RunnerPool) -> Iterator[CellRecord]:
        """The record of every cell of ``unit`` (a failed cell is a record too, never an exception).
        ``pool`` holds the unit's runners for executors that measure in this process."""

    def run_units(self, units: Sequence[Unit]) -> Iterator[tuple[Unit, CellRecord]]:
        """A concurrent executor's: every cell of every unit, each as its record arrives."""
        raise NotImplementedError(f"the {self.name} executor runs unit by unit (run_cells)")

    def close(self) -> None:
        """Release what the executor holds (a cluster connection); called once, when the run ends."""
        return None


def executor_settings(config: BenchmarkConfig) -> ExecutorConfig:
    """The ``executor:`` setting as a mapping: a bare name is ``{kind: name}``; none is ``subprocess``
    with ``isolation.subprocess``, else ``inline``."""
    if isinstance(config.executor, ExecutorConfig):
        return config.executor
    return ExecutorConfig(kind=config.executor or ("subprocess" if config.isolation.subprocess else "inline"))
