"""How a unit's timing cells are executed: in this process, in a child process per cell, or (later) on
other machines. An executor yields one record per cell; the pipeline writes them, in whatever order they
come, so an executor that runs cells concurrently needs no other change."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar

from segbench.bench.context import ModelState, RunContext, RunnerPool
from segbench.bench.plan import Unit
from segbench.results.records import CellRecord


class Executor(ABC):
    name: ClassVar[str]

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def run_cells(self, state: ModelState, unit: Unit, pool: RunnerPool) -> Iterator[CellRecord]:
        """The record of every cell of ``unit`` (a failed cell is a record too, never an exception).
        ``pool`` holds the unit's runners for executors that measure in this process."""
