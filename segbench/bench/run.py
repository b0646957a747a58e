"""The run use case behind ``segbench run``, ``segbench check`` and ``segbench bench``.

:func:`run` takes a :class:`RunRequest` (what the command line asked for, typed), narrows the config to
the models and backends named, applies the executor chosen, and runs the pipeline into the output
directory; it prints nothing and returns the :class:`~segbench.bench.sink.RunSummary` (its ``out_dir``
says where the run went). :func:`plan` is the same request's plan alone (``--dry-run``): nothing is
built or written. Bad input raises :class:`~segbench.errors.ConfigError` before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from segbench.bench.executors import executor_name, executor_settings
from segbench.bench.pipeline import plan_run, run_benchmark
from segbench.bench.plan import Plan, filter_config
from segbench.bench.sink import Listener, RunSummary
from segbench.config import BenchmarkConfig, load_config
from segbench.errors import ConfigError
from segbench.sweep import Cell

RUNS_DIR = Path("runs")  # where a run goes without --out: runs/<name>-<date>-<time>


@dataclass(frozen=True)
class RunRequest:
    """What a run was asked for: its config (a file, or one already built: ``check --model``, ``bench``)
    and the command line's narrowing and choices over it."""

    config: Path | BenchmarkConfig
    models: Sequence[str] = ()  # --models: keep only these models of the config
    backends: Sequence[str] = ()  # --backends: and only these backends
    executor: str | None = None  # --executor, over the YAML's executor: (its other settings are kept)
    address: str | None = None  # --address: the Ray cluster
    out: Path | None = None  # None: runs/<name>-<time> (check- in front for a check-only run)
    timing: bool = True  # False: the numerics check alone (segbench check)
    resume: bool = False  # finish the run in ``out``: what it wrote is skipped
    only: Cell | None = None  # time that cell alone (an isolated child's --only-cell)


@dataclass(frozen=True)
class RunPlan:
    """A request resolved: the config the run reads, where it writes, and what it would do."""

    config: BenchmarkConfig
    out_dir: Path
    plan: Plan


def resolve_config(request: RunRequest) -> BenchmarkConfig:
    """The request's config, loaded and narrowed (a copy: a built config given in is left as it was)."""
    if isinstance(request.config, BenchmarkConfig):
        config = request.config.model_copy(deep=True)
    else:
        config = load_config(request.config)
    filter_config(config, request.models, request.backends)
    if request.executor is not None or request.address is not None:
        settings = executor_settings(config)
        settings = settings.model_copy(update={"kind": request.executor or settings.kind})
        if request.address is not None:
            if settings.kind != "ray":
                raise ConfigError("--address needs --executor ray (or executor: ray in the YAML)")
            settings = settings.model_copy(update={"address": request.address})
        config.executor = settings
    executor_name(config)  # an unknown executor is bad input now
    if request.resume and request.out is None:
        raise ConfigError("--resume needs --out: the directory of the run to finish")
    return config


def output_dir(request: RunRequest, config: BenchmarkConfig) -> Path:
    if request.out is not None:
        return request.out
    prefix = "" if request.timing else "check-"
    return RUNS_DIR / f"{prefix}{config.name}-{datetime.now():%Y%m%d-%H%M%S}"


def plan(request: RunRequest) -> RunPlan:
    """What the run would do, unit by unit; nothing is built or written."""
    config = resolve_config(request)
    planned, _ = plan_run(config, request.out, request.timing, request.resume, request.only)
    return RunPlan(config, output_dir(request, config), planned)


def run(
    request: RunRequest,
    listeners: Sequence[Listener] = (),
    exporter: Callable | None = None,
) -> RunSummary:
    """Run the request into its output directory and return what was written. ``listeners`` hear of
    progress (the console's); ``exporter`` replaces the export cache (tests)."""
    config = resolve_config(request)
    out_dir = output_dir(request, config)
    return run_benchmark(config, out_dir, request.timing, request.resume, listeners, exporter,
                         only=request.only)  # fmt: skip
