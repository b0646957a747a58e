"""The capacity stage (``sweep.find_max_batch``): the largest batch one full pipeline run fits."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from segbench.backends import Runner
from segbench.bench.context import ModelState, RunContext, RunnerPool, StageFailed
from segbench.bench.plan import Unit
from segbench.data.shapes import scene_images
from segbench.errors import describe_error
from segbench.results.records import CapacityRecord
from segbench.sweep import SweepConfig

SWEEP_LIMIT = "max_batch_limit"  # ``stopped_by`` when the sweep's own limit ended the search


@dataclass(frozen=True)
class SearchOutcome:
    good: int  # the largest batch that ran (0: none)
    bad: int | None  # the smallest that failed, or None when the limit was reached
    error: str | None  # why ``bad`` failed
    limit: int  # the largest batch the search would try
    stopped_by: str  # whose limit that is: SWEEP_LIMIT or the runner's reason


def find_max_batch(
    ctx: RunContext, state: ModelState, unit: Unit, pool: RunnerPool
) -> Iterator[CapacityRecord]:
    """At every input size of the sweep, the largest batch that runs: one record per size, measured
    where the unit's cells are timed (a device stage) and stamped with that machine's provenance."""
    if not unit.find_max_batch or state.error is not None:
        return
    sweep = ctx.config.sweep_for(unit.entry, unit.backend)
    for height, width in sweep.input_sizes:
        ctx.sink.status(f"{unit.where} · {height}x{width} largest batch")
        try:
            runner, _ = pool.get((height, width))
        except StageFailed:
            continue  # the cells already recorded why
        found = search(ctx, state, runner, height, width, sweep)
        yield CapacityRecord(
            subject=state.subject(unit.backend, unit.precision),
            height=height,
            width=width,
            max_batch=found.good,
            limit=found.limit,
            limit_reached=found.bad is None,
            fails_at=found.bad,
            error=found.error if found.bad is not None else None,
            env=ctx.provenance,
            stopped_by=found.stopped_by if found.bad is None else None,
        )


def search(
    ctx: RunContext, state: ModelState, runner: Runner, height: int, width: int, sweep: SweepConfig
) -> SearchOutcome:
    """Double from the sweep's largest batch until a run fails (out of memory or any other error) or the
    limit (the sweep's ``max_batch_limit``, or the runner's ``batch_limit()`` when lower), then bisect.

    The runner drops what it keeps per shape before the search and after every try (its captured CUDA
    graphs and buffers: one per batch tried would pile up and make later tries fail early).
    """
    limit, stopped_by = sweep.max_batch_limit, SWEEP_LIMIT
    own = runner.batch_limit()
    if own is not None and own[0] < limit:
        limit, stopped_by = max(own[0], 1), own[1]

    def release() -> str | None:
        try:
            runner.release_cached_shapes()
        except Exception as exc:  # a device left broken by the last try: the next try says so too
            return describe_error(exc)
        return None

    def fits(batch: int) -> str | None:
        try:
            images = scene_images(batch, height, width, seed=ctx.config.seed)
            model = state.built
            model.postprocess(runner.infer(model.preprocess(images)), (height, width))
            error = None
        except Exception as exc:  # running out is the expected end of the search: no traceback
            error = describe_error(exc)
        released = release()
        return error or released

    release()  # what the timing cells left behind
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
    return SearchOutcome(good, bad, error, limit, stopped_by)
