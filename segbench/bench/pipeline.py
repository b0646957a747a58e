"""``segbench run`` and ``segbench check``: plan the grid, then run it through the stages.

    config -> plan (units of model x backend x precision x pass, their cells)
           -> executor: device stages (timing, batch search) where the device is -> records
           -> pipeline: driver stages (numerics, diagnosis) of each unit the executor hands back -> records
           -> sink (JSONL) -> reports

Every record is written the moment it exists. A failing cell (export error, session error, out of
memory, a crashed child) is recorded with its one-line error, its traceback goes to ``segbench.log``,
and the run goes on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from segbench.bench.context import ModelState, RunContext, RunnerPool, StageFailed, cache_export
from segbench.bench.executors import Passes, UnitDone, executor_name, make_executor
from segbench.bench.inputs import check_imported_models, check_user_artifacts
from segbench.bench.numerics import EvaluationSet
from segbench.bench.peak import PEAKS_ENV, measure_peaks
from segbench.bench.plan import Cell, Plan, Unit, build_plan, config_hash, searches_batches
from segbench.bench.resume import FinishedWork
from segbench.bench.runlog import RunLog
from segbench.bench.sentinel import Sentinel, sentinel_devices
from segbench.bench.sink import Listener, RecordSink, RunSummary
from segbench.bench.stages.diagnosis import diagnose
from segbench.bench.stages.numerics import check
from segbench.bench.workspace import Workspace
from segbench.config import BenchmarkConfig
from segbench.env import collect_env
from segbench.errors import ConfigError
from segbench.results.jsonl import write_json
from segbench.results.layout import ENV_FILE, NUMERICS_FILE, RESULTS_FILE, SCHEMA_VERSION
from segbench.results.records import Provenance, now

# What a unit goes through on the driver, once the executor has run its device stages (timing, the
# batch search) and handed it back; both act in the first timing pass only (the plan says which units).
Stage = Callable[[RunContext, ModelState, Unit, RunnerPool], None]
DRIVER_STAGES: tuple[Stage, ...] = (check, diagnose)


def _build_exports(ctx: RunContext, state: ModelState, unit: Unit, pool: RunnerPool) -> None:
    """Open the unit's runners once, so its graphs are exported (or found in the cache) now; a failure is
    remembered in the model state and reported by the cells that need it."""
    for size in dict.fromkeys(cell.size for cell in unit.served):
        with suppress(StageFailed):
            pool.get(size)


@dataclass
class _Phase:
    """Units handed to the executor at once, what a pass opening does, and whether each unit's graphs are
    built on the driver before its driver stages (a gated run builds them all before any timing)."""

    units: list[Unit]
    passes: Passes
    build_exports: bool = False

    def driver_stages(self, unit: Unit) -> tuple[Stage, ...]:
        first: tuple[Stage, ...] = (_build_exports,) if self.build_exports else ()
        return (*first, *DRIVER_STAGES) if unit.check else first


@dataclass
class _SentinelPasses:
    """Reads the noise sentinels before each pass and after the last; with a gate (``segbench ab``'s side
    worker), waits for ``gate(pass)`` before a pass instead (the ab driver reads the sentinel)."""

    sink: RecordSink
    sentinels: list[Sentinel]
    gate: Callable[[int | None], None] | None = None
    last: int = 0

    def opening(self, repeat: int) -> None:
        self.last = repeat
        for sentinel in self.sentinels:
            self.sink.reading(sentinel.read(f"before pass {repeat + 1}", repeat))
        if self.gate is not None:
            self.gate(repeat)

    def closed(self) -> None:
        for sentinel in self.sentinels:
            self.sink.reading(sentinel.read(f"after pass {self.last + 1}", None))


def _phases(units: Sequence[Unit], passes: _SentinelPasses, gated: bool) -> list[_Phase]:
    """Ungated: every unit in plan order, its driver stages after its device stages. Gated: first what
    times nothing the comparison reads (exports, batch search, numerics) for every unit that has it, then
    the timing passes alone, each behind the gate."""
    if not gated:
        return [_Phase(list(units), passes)]
    untimed = [replace(unit, cells=()) for unit in units if unit.repeat == 0]
    timed = [replace(unit, check=False, find_max_batch=False) for unit in units if unit.cells]
    quiet = _SentinelPasses(passes.sink, [])  # no pass is timed in the first phase: nothing to read
    return [_Phase(untimed, quiet, build_exports=True), _Phase(timed, passes)]


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
    with ExitStack() as stack:
        executor = stack.enter_context(make_executor(config))
        executor.open(plan.units)  # e.g. an unreachable cluster: bad input, before anything is written
        out_dir.mkdir(parents=True, exist_ok=True)
        env = _environment(config, plan, done)
        write_json(out_dir / ENV_FILE, env)
        # Every row carries it: comparisons across machines or versions can tell and say so.
        provenance = Provenance(env.get("fingerprint"), env.get("config_hash"), env.get("git_sha"))
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
        # A resumed run keeps its first session's peaks.
        ctx = RunContext(config, out_dir, sink, log, timing, provenance, evaluation_set, done,
                         exporter or cache_export, env.get("peak_tflops") or {})  # fmt: skip
        workspace = Workspace(ctx)
        # With a gate, whoever holds the gate reads the sentinel (segbench ab's driver).
        sentinels = _sentinels(plan) if timing and gate is None else []
        for phase in _phases(plan.units, _SentinelPasses(sink, sentinels, gate), gated=gate is not None):
            # closing(): a stage that raises closes the executor's generator, and with it the runners it
            # holds open, now rather than whenever the generator is collected.
            with closing(executor.run(ctx, phase.units, workspace, phase.passes)) as events:
                for event in events:
                    if not isinstance(event, UnitDone):
                        sink.record(event)
                        continue
                    stages = phase.driver_stages(event.unit)
                    if stages:
                        with workspace.open(event.unit) as (state, pool):  # the executor's, if still open
                            for stage in stages:
                                stage(ctx, state, event.unit, pool)
                    if not timing:
                        sink.advance()
        if gate is not None:
            gate(None)
        return sink.summary
