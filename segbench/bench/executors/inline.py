"""Cells measured in this process, on the unit's runners (opened once, reused cell after cell)."""

from __future__ import annotations

from collections.abc import Iterator

from segbench.bench.context import ModelState, RunContext, RunnerPool, StageFailed
from segbench.bench.executors.base import Executor
from segbench.bench.plan import Unit
from segbench.bench.stages.timing import TimingImages, cell_record, measure
from segbench.results.records import CellRecord, Measurement


class InlineExecutor(Executor):
    name = "inline"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.images = TimingImages(ctx.config.seed)

    def run_cells(self, state: ModelState, unit: Unit, pool: RunnerPool) -> Iterator[CellRecord]:
        for cell in unit.cells:
            self.ctx.sink.status(f"{unit.where} · {cell}")
            try:
                runner, opened = pool.get(cell.size)
            except StageFailed as exc:
                yield cell_record(self.ctx, state, unit, cell, Measurement.failed(str(exc)))
                continue
            measured = measure(self.ctx, state, runner, cell, self.images)
            yield cell_record(self.ctx, state, unit, cell, measured, opened)
