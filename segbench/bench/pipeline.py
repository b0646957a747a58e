"""``segbench run`` and ``segbench check``: plan the grid, then run it unit by unit through the stages.

    config -> plan (units of model x backend x precision x pass, their cells)
           -> context (model, baseline, runners on an ExitStack) -> stages -> records (JSONL) -> reports

Every record is written the moment it exists. A failing cell (export error, session error, out of
memory, a crashed child) is recorded with its one-line error, its traceback goes to ``segbench.log``,
and the run goes on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from segbench.bench.context import (
    ModelState,
    RunContext,
    RunnerPool,
    StageFailed,
    build_model_state,
    cache_export,
)
from segbench.bench.executors import EXECUTORS, executor_name
from segbench.bench.inputs import check_imported_models, check_user_artifacts
from segbench.bench.numerics import EvaluationSet
from segbench.bench.peak import PEAKS_ENV, measure_peaks
from segbench.bench.plan import Cell, Plan, Unit, build_plan, config_hash, searches_batches
from segbench.bench.resume import FinishedWork
from segbench.bench.runlog import RunLog
from segbench.bench.sentinel import Sentinel, sentinel_devices
from segbench.bench.sink import Listener, RecordSink, RunSummary
from segbench.bench.stages.capacity import find_max_batch
from segbench.bench.stages.diagnosis import diagnose
from segbench.bench.stages.numerics import check, prepare_baseline
from segbench.bench.stages.timing import time_cells
from segbench.config import BenchmarkConfig
from segbench.env import collect_env
from segbench.errors import ConfigError
from segbench.results.jsonl import write_json
from segbench.results.layout import ENV_FILE, NUMERICS_FILE, RESULTS_FILE, SCHEMA_VERSION
from segbench.results.records import Provenance, now

# What a unit goes through, in order. Each stage reads the context and writes records to its sink;
# capacity and numerics act in the first timing pass only (the plan says which units those are).
Stage = Callable[[RunContext, ModelState, Unit, RunnerPool], None]
UNIT_STAGES: tuple[Stage, ...] = (time_cells, find_max_batch, check, diagnose)
# The stages that time nothing the comparison of two runs reads (a gated run does them before any pass).
UNTIMED_STAGES = tuple(stage for stage in UNIT_STAGES if stage is not time_cells)
Step = tuple[Unit, tuple[Stage, ...], int | None]


def _steps(units: Sequence[Unit], remote: bool, gated: bool) -> list[Step]:
    """The units in order with the stages each runs, and the pass a step opens (None inside a pass).
    Remote: the cells were timed elsewhere, a unit with nothing else to do is left out. Gated: first the
    untimed stages of every unit that has them, then the passes, timing only."""
    if remote:
        return [(unit, UNTIMED_STAGES, None) for unit in units if unit.check or unit.find_max_batch]
    if not gated:
        return [(unit, UNIT_STAGES, _opens(units, i)) for i, unit in enumerate(units)]
    untimed: list[Step] = [
        (unit, (_build_exports, *UNTIMED_STAGES), None) for unit in units if unit.repeat == 0
    ]
    timed: list[Step] = [
        (unit, (time_cells,), _opens(units, i)) for i, unit in enumerate(units) if unit.cells
    ]
    return untimed + timed


def _build_exports(ctx: RunContext, state: ModelState, unit: Unit, pool: RunnerPool) -> None:
    """Open the unit's runners once, so its graphs are exported (or found in the cache) now; a failure is
    remembered in the model state and reported by the cells that need it."""
    for size in dict.fromkeys(cell.size for cell in unit.cells):
        with suppress(StageFailed):
            pool.get(size)


def _opens(units: Sequence[Unit], index: int) -> int | None:
    """The pass the unit at ``index`` opens, if it is its pass's first."""
    repeat = units[index].repeat
    return repeat if index == 0 or units[index - 1].repeat != repeat else None


def _sentinels(plan: Plan) -> list[Sentinel]:
    devices = {unit.backend.device for unit in plan.units if unit.cells}
    return [Sentinel(device) for device in sentinel_devices(devices)] if devices else []


def plan_run(
    config: BenchmarkConfig,
    out_dir: Path | None,
    timing: bool = True,
    resume: bool = False,
    only: Cell | None = None,
) -> tuple[Plan, FinishedWork]:
    """The plan of a run into ``out_dir`` (what a resumed run has left; ``only``: that cell alone),
    checking its inputs first."""
    if not timing and not config.numerics.enabled:
        raise ConfigError("numerics.enabled is false: there is nothing to check")
    executor_name(config)  # an unknown executor is bad input before anything runs
    check_imported_models(config)  # so is a module: model that cannot run
    check_user_artifacts(config)  # or a corrupt artifact, or one that is not its model's
    done = FinishedWork()
    if out_dir is not None:
        results_path = out_dir / (RESULTS_FILE if timing else NUMERICS_FILE)
        if results_path.exists() and not resume:
            raise ConfigError(
                f"{results_path} already exists: choose another --out so earlier results are kept "
                "(or --resume to finish that run)"
            )
        if resume and results_path.exists():
            done = FinishedWork.load(out_dir, config_hash(config))
    return build_plan(config, timing, done, only), done


def _environment(config: BenchmarkConfig, plan: Plan, done: FinishedWork) -> dict[str, Any]:
    if done.env is not None:  # resuming: the first session's environment stays, resumes listed
        return {**done.env, "resumed": [*done.env.get("resumed", []), now()]}
    env = collect_env()
    inherited = os.environ.get(PEAKS_ENV)
    env.update(schema=SCHEMA_VERSION, config_name=config.name, config_hash=config_hash(config),
               skipped_backends=list(plan.skipped_backends))  # fmt: skip
    if plan.timing and inherited:  # an isolated child: its parent's peak, measured once per run
        env["peak_tflops"] = json.loads(inherited)
    elif plan.timing:  # what each cell's peak_fraction divides by; a check-only run has no cells
        devices = {unit.backend.device for unit in plan.units if unit.cells}
        env["peak_tflops"], errors = measure_peaks(devices)
        if errors:
            env["peak_tflops_errors"] = errors
    return env


def run_benchmark(
    config: BenchmarkConfig,
    out_dir: Path,
    timing: bool = True,
    resume: bool = False,
    listeners: Sequence[Listener] = (),
    exporter: Callable | None = None,
    gate: Callable[[int | None], None] | None = None,
    only: Cell | None = None,
) -> RunSummary:
    """Run the grid (or, without ``timing``, the numerics check alone) into ``out_dir`` and return what
    was written. With ``resume``, finish the run there: cells and checks already written are skipped.
    ``exporter`` replaces the export cache (tests); ``only`` times that cell alone (an isolated child).

    With a ``gate`` (``segbench ab``'s side worker), the numerics check, its diagnosis and the batch search
    run first for every unit, so the exports are built before any timing; then each timing pass waits
    for ``gate(pass)`` to return, and ``gate(None)`` is called once the last pass is done."""
    plan, done = plan_run(config, out_dir, timing, resume, only)
    evaluation_set = None
    if config.numerics.enabled:
        # Read the evaluation data before writing anything: a bad dataset path is bad input (exit 2).
        evaluation_set = EvaluationSet.from_config(config)
        evaluation_set.chunk(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _environment(config, plan, done)
    write_json(out_dir / ENV_FILE, env)
    # Every row carries it: comparisons across machines or versions can tell and say so.
    provenance = Provenance(env.get("fingerprint"), env.get("config_hash"), env.get("git_sha"))
    with ExitStack() as stack:
        log = stack.enter_context(RunLog(out_dir))
        sink = stack.enter_context(
            RecordSink(out_dir, timing, searches_batches(config, timing), list(listeners))
        )
        sink.summary.skipped_backends = list(plan.skipped_backends)
        for skipped in plan.skipped_backends:
            sink.note(f"skipping {skipped['backend']} on {skipped['device']}: {skipped['reason']}")
            log.info(f"skipping {skipped['backend']} on {skipped['device']}: {skipped['reason']}")
        for listener in listeners:
            listener.begin(plan.total)
            stack.callback(listener.end)
        ctx = RunContext(config, out_dir, sink, log, timing, provenance, evaluation_set, done,
                         exporter or cache_export)  # fmt: skip
        ctx.peak_tflops = env.get("peak_tflops") or {}  # a resumed run keeps its first session's peaks
        executor = ctx.executor = EXECUTORS[executor_name(config)](ctx)
        stack.callback(executor.close)
        # A concurrent executor (ray) times every unit's cells side by side first; the driver writes each
        # record as it arrives, then runs the remaining stages (capacity, numerics) here, one baseline.
        remote = timing and executor.concurrent
        if remote:
            for _, record in executor.run_units(plan.units):
                sink.cell(record)
        # The noise sentinel is read here, around the passes timed here (a concurrent executor's cells are
        # timed elsewhere); with a gate, whoever holds the gate reads it (segbench ab's driver).
        sentinels = [] if remote or not timing or gate is not None else _sentinels(plan)
        states: dict[int, ModelState] = {}  # per model entry: a model may be listed twice (two weights)
        for unit, stages, opens_pass in _steps(plan.units, remote, gated=gate is not None):
            if opens_pass is not None:
                for sentinel in sentinels:
                    sink.reading(sentinel.read(f"before pass {opens_pass + 1}", opens_pass))
                if gate is not None:
                    gate(opens_pass)
            if id(unit.entry) not in states:
                state = states[id(unit.entry)] = build_model_state(ctx, unit.entry)
                if state.model is not None and evaluation_set is not None:
                    prepare_baseline(ctx, state)
            state = states[id(unit.entry)]
            with RunnerPool(ctx, state, unit) as pool:  # every runner closed, whatever a stage does
                for stage in stages:
                    stage(ctx, state, unit, pool)
            if not timing:
                sink.advance()
        for sentinel in sentinels:  # there are sentinels only when some unit has cells
            sink.reading(sentinel.read(f"after pass {plan.units[-1].repeat + 1}", None))
        if gate is not None:
            gate(None)
        return sink.summary
