"""What the stages of one process share while a run goes unit by unit: each model entry's state (the
built network and its baseline, built on first use) and the runners of the unit at hand.

The local executor opens a unit here for its device stages and hands the unit back while it is still
open; the pipeline's driver stages then open the same unit and get the same runners, so a session or
an engine is opened once per unit whichever stage needs it first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from segbench.bench.context import ModelState, RunContext, RunnerPool, build_model_state
from segbench.bench.plan import Unit
from segbench.bench.stages.numerics import prepare_baseline
from segbench.config import ModelEntry


class Workspace:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        # Per model entry, by identity: a model may be listed twice (two weights).
        self._states: dict[int, ModelState] = {}
        self._open: tuple[Unit, ModelState, RunnerPool] | None = None

    def state(self, entry: ModelEntry) -> ModelState:
        """The entry's model state, built (with its numerics baseline) the first time it is asked for."""
        if id(entry) not in self._states:
            state = self._states[id(entry)] = build_model_state(self.ctx, entry)
            if state.model is not None and self.ctx.evaluation_set is not None:
                prepare_baseline(self.ctx, state)
        return self._states[id(entry)]

    @contextmanager
    def open(self, unit: Unit) -> Iterator[tuple[ModelState, RunnerPool]]:
        """The unit's model state and runner pool; every runner is closed when the outermost ``open`` of
        the unit ends, whatever a stage does."""
        if self._open is not None and self._open[0] is unit:
            yield self._open[1], self._open[2]
            return
        state = self.state(unit.entry)
        with RunnerPool(self.ctx, state, unit) as pool:
            outer, self._open = self._open, (unit, state, pool)
            try:
                yield state, pool
            finally:
                self._open = outer
