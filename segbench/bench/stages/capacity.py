"""The capacity stage (``sweep.find_max_batch``): the largest batch one full pipeline run fits."""

from __future__ import annotations

from segbench.backends import Runner
from segbench.bench.context import ModelState, RunContext, RunnerPool, StageFailed
from segbench.bench.plan import Unit
from segbench.bench.runlog import describe_error
from segbench.data.shapes import scene_images
from segbench.results.records import CapacityRecord
from segbench.sweep import SweepConfig


def find_max_batch(ctx: RunContext, state: ModelState, unit: Unit, pool: RunnerPool) -> None:
    """At every input size of the sweep, the largest batch that runs: one record per size."""
    if not unit.find_max_batch or state.error is not None:
        return
    sweep = ctx.config.sweep_for(unit.entry, unit.backend)
    for height, width in sweep.input_sizes:
        ctx.sink.status(f"{unit.where} · {height}x{width} largest batch")
        try:
            runner, _ = pool.get((height, width))
        except StageFailed:
            continue  # the cells already recorded why
        good, bad, error = _search(ctx, state, runner, height, width, sweep)
        ctx.sink.capacity(
            CapacityRecord(
                subject=state.subject(unit.backend, unit.precision),
                height=height,
                width=width,
                max_batch=good,
                limit=sweep.max_batch_limit,
                limit_reached=bad is None,
                fails_at=bad,
                error=error if bad is not None else None,
                env=ctx.provenance,
            )
        )


def _search(
    ctx: RunContext, state: ModelState, runner: Runner, height: int, width: int, sweep: SweepConfig
) -> tuple[int, int | None, str | None]:
    """Double from the sweep's largest batch until a run fails (out of memory or any other error) or
    the limit, then bisect: (largest that ran, smallest that failed or None, why it failed)."""

    def fits(batch: int) -> str | None:
        try:
            images = scene_images(batch, height, width, seed=ctx.config.seed)
            state.model.postprocess(runner.infer(state.model.preprocess(images)), (height, width))
        except Exception as exc:  # running out is the expected end of the search: no traceback
            return describe_error(exc)
        return None

    limit = sweep.max_batch_limit
    good, bad, error = 0, None, None
    batch = min(max(sweep.batch_sizes), limit)
    while bad is None:
        error = fits(batch)
        if error is None:
            good = batch
            if batch >= limit:
                break
            batch = min(batch * 2, limit)
        else:
            bad = batch
    while bad is not None and bad - good > 1:
        middle = (good + bad) // 2
        found = fits(middle)
        if found is None:
            good = middle
        else:
            bad, error = middle, found
    return good, bad, error
