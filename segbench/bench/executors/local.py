"""The device stages in this process, unit after unit (``executor: local``, the default). With
``isolation.subprocess`` each timing cell runs in its own child process instead (``isolated.py``); the
batch search stays here, on the unit's runners."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence

from segbench.bench.context import ModelState, RunContext, RunnerPool
from segbench.bench.executors.base import DeviceEvent, Executor, Passes, UnitDone, isolated
from segbench.bench.executors.isolated import isolated_cells
from segbench.bench.plan import Unit
from segbench.bench.stages.capacity import find_max_batch
from segbench.bench.stages.timing import time_cells
from segbench.bench.workspace import Workspace
from segbench.config import BenchmarkConfig
from segbench.results.records import CapacityRecord, CellRecord

DeviceStage = Callable[[RunContext, ModelState, Unit, RunnerPool], Iterator[CellRecord | CapacityRecord]]
# In order; the first is the timing stage, which isolation swaps for a child process per cell.
DEVICE_STAGES: tuple[DeviceStage, ...] = (time_cells, find_max_batch)


def device_records(
    ctx: RunContext, state: ModelState, unit: Unit, pool: RunnerPool, isolate: bool = False
) -> Iterator[CellRecord | CapacityRecord]:
    """The unit's device stages on this machine: its cells (measured here, or with ``isolate`` one child
    process each), then its largest-batch search."""
    for stage in (isolated_cells, *DEVICE_STAGES[1:]) if isolate else DEVICE_STAGES:
        yield from stage(ctx, state, unit, pool)


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, config: BenchmarkConfig) -> None:
        super().__init__(config)
        self.isolate = isolated(config)

    def run(
        self, ctx: RunContext, units: Sequence[Unit], workspace: Workspace, passes: Passes
    ) -> Generator[DeviceEvent, None, None]:
        current: int | None = None
        for unit in units:
            if unit.cells and unit.repeat != current:
                current = unit.repeat
                passes.opening(current)
            with workspace.open(unit) as (state, pool):
                yield from device_records(ctx, state, unit, pool, self.isolate)
                yield UnitDone(unit)  # the driver stages run now, on the runners still open
        if current is not None:
            passes.closed()
