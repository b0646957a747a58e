"""``segbench run``: the grid model x backend x precision x input size x batch size, then numerics.

Every cell is written to ``results.jsonl`` the moment it finishes. A cell that fails (export error,
session error, out of memory, unsupported op) is recorded with status ``failed`` and its error, and the
run goes on. Per model, the PyTorch fp32 CPU baseline is evaluated once on the numerics dataset, and
each backend x precision is evaluated with the same runner that was just timed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from segbench.backends import BACKENDS, GRAPH, BackendConfig, BackendSpec, Runner
from segbench.backends.torch_backend import TorchConfig, TorchRunner
from segbench.bench.harness import TimingPlan, measure_cell
from segbench.bench.memory import PeakDeviceMemory, PeakHostMemory
from segbench.bench.numerics import EvaluationSet, grown_verdicts, joined
from segbench.bench.resume import FinishedWork
from segbench.config import BenchmarkConfig, FolderDatasetConfig, ModelEntry
from segbench.data.shapes import IGNORE_INDEX, scene_images
from segbench.env import collect_env
from segbench.errors import ConfigError, first_line
from segbench.export.artifacts import ExportRequest, cached_export
from segbench.export.cache import state_dict_digest
from segbench.export.fp16_diagnosis import diagnose_precision
from segbench.export.onnx import DEFAULT_OPSET, PARITY_TOLERANCES, OnnxExport, check_parity
from segbench.metrics.equivalence import MetricVerdict, baseline_rows, judge
from segbench.metrics.tasks import Evaluation, evaluate_task
from segbench.metrics.tensors import compare_tensors, tensor_row
from segbench.models.base import SegmentationModel
from segbench.models.registry import build_model, get_spec, model_stats
from segbench.reports.tables import numerics_table, results_table
from segbench.results.jsonl import JsonlWriter, read_jsonl, write_json
from segbench.results.layout import ENV_FILE, NUMERICS_FILE, RESULTS_FILE, SCHEMA_VERSION
from segbench.results.verdicts import FAIL, INCONCLUSIVE, counts

# The measurement fields of a cell that did not run.
FAILED_MEASUREMENT = {
    "status": "failed",
    "error": None,
    "latency_ms": None,
    "throughput_ips": None,
    "peak_host_mb": None,
    "peak_device_mb": None,
}
CAPACITY_FILE = "capacity.jsonl"


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message`` — enough to read in a table, the full text stays in logs."""
    first = first_line(exc)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def filter_config(
    config: BenchmarkConfig, models: Sequence[str] | None, backends: Sequence[str] | None
) -> None:
    """Narrow the grid to the named models / backends (``--models``, ``--backends``), in place."""
    if models:
        for name in models:
            get_spec(name)  # unknown names list the valid ones
            if name not in {m.name for m in config.models}:
                present = ", ".join(dict.fromkeys(m.name for m in config.models))
                raise ConfigError(f"--models: {name} is not in the config (it has: {present})")
        config.models = [m for m in config.models if m.name in models]
    if backends:
        for name in backends:
            if name not in BACKENDS:
                raise ConfigError(
                    f"--backends: unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}"
                )
            if name not in {b.name for b in config.backends}:
                present = ", ".join(dict.fromkeys(b.name for b in config.backends))
                raise ConfigError(f"--backends: {name} is not in the config (it has: {present})")
        config.backends = [b for b in config.backends if b.name in backends]


def config_hash(config: BenchmarkConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


@dataclass
class RunSummary:
    results: list[dict[str, Any]] = field(default_factory=list)
    numerics: list[dict[str, Any]] = field(default_factory=list)
    skipped_backends: list[dict[str, str]] = field(default_factory=list)

    @property
    def failed_cells(self) -> int:
        return sum(r["status"] != "ok" for r in self.results)

    @property
    def exit_code(self) -> int:
        """1 when a cell or a check failed; else 3 when a check stayed inconclusive; else 0."""
        checks = counts(self.numerics)
        if self.failed_cells or checks[FAIL]:
            return 1
        return 3 if checks[INCONCLUSIVE] else 0


class TimingImages:
    """Batches of synthetic scenes for timing, generated once per (batch, height, width)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    def get(self, batch: int, height: int, width: int) -> np.ndarray:
        key = (batch, height, width)
        if key not in self._cache:
            images = scene_images(batch, height, width, seed=self.seed)
            # Keep only the latest batch: cells run size by size, and a large sweep must not pile up images.
            self._cache.clear()
            self._cache[key] = images
        return self._cache[key]


def _ignore_index(config: BenchmarkConfig) -> int:
    dataset = config.numerics.dataset
    return dataset.ignore_index if isinstance(dataset, FolderDatasetConfig) else IGNORE_INDEX


@dataclass
class ModelState:
    """One model entry while it runs: its record fields, the built model, and its baseline metrics."""

    entry: ModelEntry
    record: dict[str, Any]
    model: SegmentationModel | None = None
    error: str | None = None
    baseline_chunks: list[Evaluation] = field(default_factory=list)  # per image-count step
    baseline_outputs: list[dict[str, Any]] = field(default_factory=list)  # raw, for the tensor check
    exports: dict[Any, OnnxExport | dict | str] = field(default_factory=dict)
    weights_sha256: str | None = None
    stats: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)


class BenchmarkRun:
    """The grid (``timing=True``, ``segbench run``) or the numerics check alone (``segbench check``)."""

    def __init__(
        self,
        config: BenchmarkConfig,
        out_dir: Path,
        console: Console | None = None,
        timing: bool = True,
        resume: bool = False,
    ) -> None:
        self.config = config
        self.timing = timing
        self.resume = resume
        self.done = FinishedWork()
        self.out_dir = out_dir
        self.console = console or Console()
        self.summary = RunSummary()
        self.images = TimingImages(config.seed)
        self.evaluation_set: EvaluationSet | None = None

    # -- planning -------------------------------------------------------------------------------
    def _available_backends(self) -> list[tuple[BackendConfig, BackendSpec]]:
        available = []
        for backend in self.config.backends:
            runner_class = BACKENDS[backend.name]
            reason = runner_class.unavailable(backend)
            if reason is None:
                available.append((backend, runner_class))
            else:
                self.summary.skipped_backends.append(
                    {"backend": backend.name, "device": backend.device, "reason": reason}
                )
        return available

    def _numerics_cells(self) -> list[tuple[int, int, int]]:
        """``(height, width, batch)`` of the numerics batches, when the dataset has one image size."""
        dataset = self.config.numerics.dataset
        if not self.config.numerics.enabled or isinstance(dataset, FolderDatasetConfig):
            return []
        return [(dataset.height, dataset.width, b) for b in {1, self.config.numerics.batch_size}]

    def _repeats(self, entry: ModelEntry) -> int:
        return (entry.timing or self.config.timing).repeats if self.timing else 1

    def _cells(
        self, entry: ModelEntry, backend: BackendConfig, precision: str | None = None, repeat: int = 0
    ) -> list[tuple[int, int, int]]:
        """``(height, width, batch)`` of the timing cells of pass ``repeat``; with ``precision``, only
        those not yet done (a resumed run skips the cells its first session finished)."""
        if not self.timing or repeat >= self._repeats(entry):
            return []
        sweep = self.config.sweep_for(entry, backend)
        cells = [(h, w, b) for h, w in sweep.input_sizes for b in sweep.batch_sizes]
        if precision is None:
            return cells
        return [cell for cell in cells if not self.done.has_cell(entry, backend, precision, cell, repeat)]

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        results_path = self.out_dir / (RESULTS_FILE if self.timing else NUMERICS_FILE)
        if results_path.exists() and not self.resume:
            raise ConfigError(
                f"{results_path} already exists: choose another --out so earlier results are kept "
                "(or --resume to finish that run)"
            )
        if self.resume and results_path.exists():
            self.done = FinishedWork.load(self.out_dir, config_hash(self.config))
        if not self.timing and not self.config.numerics.enabled:
            raise ConfigError("numerics.enabled is false: there is nothing to check")
        # Read the evaluation data before writing anything: a bad dataset path is bad input (exit 2).
        if self.config.numerics.enabled:
            self.evaluation_set = EvaluationSet.from_config(self.config)
            self.evaluation_set.chunk(0)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        backends = self._available_backends()
        for skipped in self.summary.skipped_backends:
            where = f"{skipped['backend']} on {skipped['device']}"
            self.console.print(f"[yellow]skipping {where}:[/] {escape(skipped['reason'])}")
        env = collect_env()
        env.update(
            schema=SCHEMA_VERSION,
            config_name=self.config.name,
            config_hash=config_hash(self.config),
            skipped_backends=self.summary.skipped_backends,
        )
        if self.done.env is not None:  # resuming: the first session's environment stays, resumes listed
            env = {**self.done.env, "resumed": [*self.done.env.get("resumed", []), _now()]}
        write_json(self.out_dir / ENV_FILE, env)
        # Every row carries it: comparisons across machines or versions can tell and say so.
        self.fingerprint = {
            "fingerprint": env.get("fingerprint"),
            "config_hash": env["config_hash"],
            "git_sha": env["git_sha"],
        }

        work = {
            entry.name: [
                (backend, runner_class, precision)
                for backend, runner_class in backends
                if backend.model in (None, entry.name)
                for precision in backend.precisions
            ]
            for entry in self.config.models
        }
        passes = max(self._repeats(entry) for entry in self.config.models)
        total = sum(
            sum(len(self._cells(entry, backend, precision, repeat)) for repeat in range(passes))
            if self.timing
            else 1
            for entry in self.config.models
            for backend, _, precision in work[entry.name]
        )
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        with (
            self.progress,
            JsonlWriter(self.out_dir / RESULTS_FILE) if self.timing else nullcontext() as self.results,
            JsonlWriter(self.out_dir / NUMERICS_FILE) as self.numerics,
            JsonlWriter(self.out_dir / CAPACITY_FILE)
            if self._searches_batches()
            else nullcontext() as self.capacity,
        ):
            self.task = self.progress.add_task("starting", total=total)
            states: dict[str, ModelState] = {}
            # Pass 0 also checks numerics; later passes (timing.repeats) measure the grid again.
            for repeat in range(passes):
                for entry in self.config.models:
                    remaining = [
                        (backend, runner_class, precision)
                        for backend, runner_class, precision in work[entry.name]
                        if self._cells(entry, backend, precision, repeat)
                        or (repeat == 0 and not self.done.checked(entry, backend, precision))
                    ]
                    if not remaining:
                        continue  # finished before a resume: not even built
                    if entry.name not in states:
                        states[entry.name] = self._prepare_model(entry)
                    for backend, runner_class, precision in remaining:
                        self._run_backend(states[entry.name], backend, runner_class, precision, repeat)
        return self.summary

    def _status(self, text: str) -> None:
        self.progress.update(self.task, description=text)

    def _prepare_model(self, entry: ModelEntry) -> ModelState:
        """Build the model and evaluate its PyTorch fp32 CPU baseline; failures are kept, not raised."""
        options = dict(entry.options)
        if entry.weights == "random" and "num_classes" not in options:
            options["num_classes"] = self.config.dataset_num_classes()
        record = {"model": entry.name, "task": get_spec(entry.name).task, "weights": entry.weights}
        state = ModelState(entry, record)
        try:
            state.model = build_model(entry.name, entry.weights, options, seed=self.config.seed)
            options = state.model.options
            record["task"] = state.model.task  # a multi-task model (Mask2Former) serves the one asked for
        except Exception as exc:
            state.error = describe_error(exc)
        record["model_options"] = options
        if state.model is not None and self.evaluation_set is not None:
            baseline = self._baseline(state, 0)
            if entry.name not in self.done.baselines:
                for verdict in baseline_rows(baseline):
                    self._write_numerics(state, TorchConfig(), "fp32", verdict.to_dict(), role="baseline")
        return state

    def _baseline(self, state: ModelState, step: int) -> Evaluation:
        """The PyTorch fp32 CPU baseline on the first ``steps[step]`` images, evaluated chunk by chunk
        once per model and shared by every backend."""
        while len(state.baseline_chunks) <= step:
            index = len(state.baseline_chunks)
            self._status(
                f"{state.entry.name}: PyTorch fp32 baseline, {self.evaluation_set.steps[index]} images"
            )
            with TorchRunner(state.model, TorchConfig(), "fp32") as runner:
                state.baseline_chunks.append(
                    self._evaluate(
                        state.model,
                        lambda size: runner,
                        self.evaluation_set.chunk(index),
                        state.baseline_outputs if not index else None,
                    )
                )
        return joined(state.baseline_chunks[: step + 1])

    def _export(
        self, state: ModelState, backend: BackendConfig, size: tuple[int, int] | None, precision: str
    ) -> OnnxExport:
        """The model's verified ONNX graph for this backend's opset/exporter at ``precision`` (and size,
        for per-size models), from the export cache or exported into it; looked up once per run, and a
        failure is remembered and raised again as _StageFailed."""
        request = ExportRequest(
            opset=getattr(backend, "opset", DEFAULT_OPSET),
            exporter=getattr(backend, "exporter", None),
            static_size=size,
            precision=precision,
        )

        def export() -> OnnxExport:
            suffix = f", {size[0]}x{size[1]}" if size else ""
            self._status(f"{state.entry.name}: {precision} ONNX graph (opset {request.opset}{suffix})")
            if state.weights_sha256 is None:
                state.weights_sha256 = state_dict_digest(state.model.state_dict())
            # An fp16 graph failing its parity still runs: the numerics check judges it, and diagnoses it.
            return cached_export(
                state.model,
                state.entry.name,
                request,
                weights_sha256=state.weights_sha256,
                require_parity=False,
            )

        return _once(state.exports, request, export)

    def _user_artifact(self, state: ModelState, backend: BackendConfig, precision: str) -> dict[str, Any]:
        """A pre-exported file named in the YAML: an ONNX graph gets the parity check against PyTorch
        (recorded, not enforced: the numerics check judges the task metric), an engine is taken as is."""

        def check() -> dict[str, Any]:
            path = backend.artifact
            record: dict[str, Any] = {"path": str(path), "user_artifact": True, "parity": None}
            if path.suffix == ".onnx":
                self._status(f"{state.entry.name}: parity of {path.name}")
                height, width, _ = [*self._cells(state.entry, backend), *self._numerics_cells()][0]
                shapes = [(1, height, width)]
                tolerance = PARITY_TOLERANCES.get(precision, PARITY_TOLERANCES["fp16"])
                record["parity"] = [
                    asdict(r) for r in check_parity(state.model, path, shapes, tolerance=tolerance)
                ]
            return record

        return _once(state.exports, ("artifact", str(backend.artifact), precision), check)

    def _run_backend(
        self,
        state: ModelState,
        backend: BackendConfig,
        runner_class: BackendSpec,
        precision: str,
        repeat: int = 0,
    ) -> None:
        """Time every cell of one backend x precision in pass ``repeat``; in the first pass, also check
        its numerics with the same runners."""

        cells = self._cells(state.entry, backend, precision, repeat)

        # Engines derive their optimization profile from the shapes they will see: the cells, and the
        # numerics batches (the full batch and a remainder of 1) at the evaluation size.
        served = [*cells, *self._numerics_cells()]

        def open_runner(size: tuple[int, int] | None) -> tuple[Runner, dict[str, Any]]:
            shapes = sorted({(b, 3, h, w) for h, w, b in served if size is None or (h, w) == size})
            path, export_s, record = None, None, None
            if backend.artifact is not None:
                record = self._user_artifact(state, backend, precision)
                path = backend.artifact
            elif runner_class.consumes == GRAPH:
                graph_precision = runner_class.graph_precision(backend, precision)
                export = self._export(state, backend, size, graph_precision)
                path, export_s, record = export.path, export.export_s, export.to_dict()
            runner = runner_class.make_runner(state.model, backend, precision, path, shapes)
            start = time.perf_counter()
            runner.__enter__()
            return runner, {
                "cold_start": {"export_s": export_s, "activate_s": time.perf_counter() - start},
                # The graph (or engine) this cell ran, with its parity against PyTorch.
                "artifact": record,
            }

        per_size = (
            state.model is not None
            and runner_class.consumes == GRAPH
            and backend.artifact is None
            and not state.model.dynamic_spatial
        )
        pool = RunnerPool(open_runner, per_size)
        where = f"{state.entry.name} · {backend.name}/{backend.device}/{precision}"
        try:
            for height, width, batch in cells:
                self._status(f"{where} · {height}x{width} b{batch}")
                if self.config.isolation.subprocess:
                    record = self._isolated_cell(state, backend, precision, (height, width, batch))
                    self._record_cell({**record, "repeat": repeat})
                    continue
                runner, error, info = None, state.error, {"cold_start": None, "artifact": None}
                if error is None:
                    try:
                        runner, info = pool.get((height, width))
                    except _StageFailed as exc:
                        error = str(exc)
                record = {
                    **self._row(state, backend, precision, batch_size=batch, height=height, width=width),
                    "repeat": repeat,
                    **self._measure(state, runner, error, batch, height, width),
                    **info,
                }
                if record["status"] == "ok":
                    record.update(self._stats(state, height, width))
                self._record_cell(record)
            if repeat > 0:
                return  # capacity and numerics belong to the first pass
            sweep = self.config.sweep_for(state.entry, backend)
            if self.timing and sweep.find_max_batch and state.error is None:
                for size in sweep.input_sizes:
                    self._find_max_batch(state, backend, precision, pool, size, sweep)
            if self.done.checked(state.entry, backend, precision):
                pass  # checked before a resume
            elif state.baseline_chunks:
                self._check(state, backend, precision, pool)
            elif not self.timing:  # the model itself failed: say so, since there are no cells to
                verdict = {"metric": "model", "value": None, "baseline": None, "delta": None,
                           "tolerance": None, "verdict": "fail", "passed": False}  # fmt: skip
                self._write_numerics(state, backend, precision, verdict, error=state.error)
            if not self.timing:
                self.progress.advance(self.task)
        finally:
            pool.close()

    def _row(
        self, state: ModelState, backend: BackendConfig, precision: str, **fields: Any
    ) -> dict[str, Any]:
        """A result row: what ran (model, backend entry, precision), ``fields``, and when and where."""
        return {
            **state.record,
            "backend": backend.name,
            "backend_options": backend.variant(),
            "device": backend.device,
            "precision": precision,
            **fields,
            "env": self.fingerprint,
            "timestamp": _now(),
        }

    @staticmethod
    def _nvml_index(runner: Runner) -> int | None:
        """NVML's index of the GPU a CUDA runner uses (NVML counts in PCI order, ignoring
        CUDA_VISIBLE_DEVICES), or None for host backends: no NVML sampling thread on CPU cells."""
        if runner.config.device != "cuda":
            return None
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        return int(visible[0]) if visible and visible[0].strip().isdigit() else 0

    def _searches_batches(self) -> bool:
        return self.timing and any(
            self.config.sweep_for(entry, backend).find_max_batch
            for entry in self.config.models
            for backend in self.config.backends
        )

    def _find_max_batch(
        self,
        state: ModelState,
        backend: BackendConfig,
        precision: str,
        pool: RunnerPool,
        size: tuple[int, int],
        sweep: Any,
    ) -> None:
        """The largest batch one full pipeline run fits at ``size``: double from the sweep's largest
        batch until a run fails (out of memory or any other error) or the limit, then bisect."""
        height, width = size
        self._status(f"{state.entry.name} · {backend.name}/{precision} · {height}x{width} largest batch")
        try:
            runner, _ = pool.get(size)
        except _StageFailed:
            return  # the cells already recorded why

        def fits(batch: int) -> str | None:
            try:
                images = scene_images(batch, height, width, seed=self.config.seed)
                state.model.postprocess(runner.infer(state.model.preprocess(images)), (height, width))
            except Exception as exc:
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
        record = self._row(
            state,
            backend,
            precision,
            height=height,
            width=width,
            max_batch=good,
            limit=limit,
            limit_reached=bad is None,
            fails_at=bad,
            error=error if bad is not None else None,
        )
        self.capacity.write(record)

    def _record_cell(self, record: dict[str, Any]) -> None:
        self.results.write(record)
        self.summary.results.append(record)
        self.progress.advance(self.task)
        latency = record.get("latency_ms") or {}
        where = f"{record['model']} {record['backend']}/{record['device']}/{record['precision']}"
        cell = f"{record['height']}x{record['width']} b{record['batch_size']}"
        outcome = (
            f"p50 {latency['p50']:.2f} ms, {record['throughput_ips']:.1f} img/s"
            if record["status"] == "ok"
            else f"[red]{record['status']}[/] {escape(record.get('error') or '')}"
        )
        self.progress.console.print(f"  {escape(where)} {cell}: {outcome}")

    def _isolated_cell(
        self, state: ModelState, backend: BackendConfig, precision: str, cell: tuple[int, int, int]
    ) -> dict[str, Any]:
        """One timing cell in a child ``segbench run`` restricted to it (numerics off): the child's
        crash or hang is this cell's failure, recorded here, and the run goes on."""
        height, width, batch = cell
        data = self.config.model_dump(mode="json", exclude={"isolation"})
        data["timing"]["repeats"] = 1  # the parent runs the passes, one child per cell and pass
        entry = state.entry.model_dump(mode="json")
        entry["sweep"] = None
        if entry["timing"] is not None:
            entry["timing"]["repeats"] = 1
        one_backend = {**backend.model_dump(mode="json"), "precisions": [precision], "model": None}
        one_backend["sweep"] = {"input_sizes": [[height, width]], "batch_sizes": [batch]}
        one_backend.pop("supported_precisions", None)
        data.update(models=[entry], backends=[one_backend], numerics={**data["numerics"], "enabled": False})
        base = {
            **self._row(state, backend, precision, batch_size=batch, height=height, width=width),
            **FAILED_MEASUREMENT,
            "cold_start": None,
            "artifact": None,
        }
        timeout = self.config.isolation.timeout_s
        with tempfile.TemporaryDirectory(prefix="segbench-cell-") as tmp:
            config_path = Path(tmp) / "cell.yaml"
            config_path.write_text(yaml.safe_dump(data), encoding="utf-8")
            argv = [
                sys.executable,
                "-m",
                "segbench",
                "run",
                str(config_path),
                "--out",
                str(Path(tmp) / "out"),
                "--no-report",
            ]
            try:
                child = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                return {**base, "status": "timeout", "error": f"cell timed out after {timeout:g} s"}
            rows = (
                read_jsonl(Path(tmp) / "out" / RESULTS_FILE)
                if (Path(tmp) / "out" / RESULTS_FILE).exists()
                else []
            )
        if rows:
            return {**rows[0], "env": self.fingerprint, "isolated": True}
        lines = [line for line in child.stderr.strip().splitlines() if line.strip()]
        why = lines[-1] if lines else "no output"
        return {
            **base,
            "status": "crashed",
            "error": f"cell process exited with code {child.returncode}: {why}",
        }

    def _stats(self, state: ModelState, height: int, width: int) -> dict[str, Any]:
        """Parameters and GFLOPs at one input size, counted once per model and size."""
        key = (height, width)
        if key not in state.stats:
            state.stats[key] = model_stats(state.entry.name, state.record["model_options"], height, width)
        return state.stats[key]

    def _measure(
        self,
        state: ModelState,
        runner: Runner | None,
        error: str | None,
        batch: int,
        h: int,
        w: int,
    ) -> dict[str, Any]:
        failed = {**FAILED_MEASUREMENT, "error": error}
        model = state.model
        if runner is None or model is None:
            return failed
        timing = state.entry.timing or self.config.timing
        try:
            images = self.images.get(batch, h, w)
            runner.reset_peak_device_memory()
            with PeakHostMemory() as memory, PeakDeviceMemory(self._nvml_index(runner)) as device:
                measured = measure_cell(
                    model, runner, images, TimingPlan(**timing.model_dump(exclude={"repeats"}))
                )
        except Exception as exc:
            return {**failed, "error": describe_error(exc)}
        return {
            "status": "ok",
            "error": None,
            "latency_ms": measured.latency_ms,
            "throughput_ips": measured.throughput_ips,
            "peak_host_mb": memory.peak_mb,
            # The framework's own peak (torch allocator, + TensorRT's activation memory), and the process's
            # and the whole device's as NVML sees them (sampled), the same way for every backend.
            "peak_device_mb": runner.peak_device_memory_mb(),
            "peak_device_nvml_process_mb": device.process_peak_mb,
            "peak_device_nvml_device_mb": device.device_peak_mb,
            "stages_ms": measured.stages_ms,
            "compute_ms": measured.compute_ms,
            "warmup": measured.warmup,
            "iterations": measured.iterations,
            "first_iteration_ms": measured.first_iteration_ms,
            "samples_ms": measured.samples_ms,
            "backend_info": runner.describe(),
        }

    def _evaluate(
        self,
        model: SegmentationModel,
        runner_for: Callable[[tuple[int, int]], Runner],
        samples: Sequence,
        raw_outputs: list[dict[str, Any]] | None = None,
    ) -> Evaluation:
        """Task metrics and their per-image statistics over ``samples`` through the shared pipeline;
        ``runner_for`` gives the runner for a batch's image size (one runner for most backends, one per
        size for per-size graphs). The raw outputs (and inputs) of the first ``tensor_images`` images
        are appended to ``raw_outputs`` for the tensor-level check."""
        budget = self.config.numerics.tensor_images if raw_outputs is not None else 0

        def predict(images: np.ndarray) -> Any:
            nonlocal budget
            runner = runner_for(images.shape[1:3])
            feeds = model.preprocess(images)
            outputs = runner.infer(feeds)
            if budget > 0:
                raw_outputs.append({"feeds": feeds, "outputs": outputs})
                budget -= len(images)
            return model.postprocess(outputs, images.shape[1:3])

        return evaluate_task(
            model.task,
            predict,
            samples,
            self.config.numerics.batch_size,
            model.num_classes,
            _ignore_index(self.config),
            model.category_offset,
        )

    def _check(self, state: ModelState, backend: BackendConfig, precision: str, pool: RunnerPool) -> None:
        """Task-level and tensor-level verdicts of one backend x precision against the baseline."""
        if isinstance(backend, TorchConfig) and backend.device == "cpu" and precision == "fp32":
            return  # the baseline configuration itself
        self._status(f"{state.entry.name} · {backend.name}/{backend.device}/{precision} · numerics")
        numerics = self.config.numerics
        tolerances = numerics.tolerances(precision)
        error = state.error
        if error is None:
            raw: list[dict[str, Any]] = []
            try:
                verdicts = self._task_verdicts(state, backend, precision, pool, raw)
            except _StageFailed as exc:
                error = str(exc)
            except Exception as exc:
                error = describe_error(exc)
            else:
                for verdict in verdicts:
                    self._write_numerics(state, backend, precision, verdict.to_dict())
                tensors = compare_tensors(
                    state.model.task,
                    [batch["outputs"] for batch in state.baseline_outputs],
                    [batch["outputs"] for batch in raw],
                    numerics.tensor_limits(precision),
                )
                self._write_numerics(state, backend, precision, tensor_row(tensors), level="tensor")
                failed = not tensors.passed or any(v.passed is False for v in verdicts)
                if failed and precision != "fp32" and raw:
                    self._diagnose(state, backend, precision, pool, raw[0]["feeds"])
                return
        for metric, base_value in state.baseline_chunks[0].metrics.items():
            verdict = {
                "metric": metric,
                "value": None,
                "baseline": 100 * base_value,
                "delta": None,
                "tolerance": tolerances[metric],
                "verdict": "fail",
                "passed": False,
            }
            self._write_numerics(state, backend, precision, verdict, error=error)

    def _task_verdicts(
        self, state: ModelState, backend: BackendConfig, precision: str, pool: RunnerPool, raw: list
    ) -> list[MetricVerdict]:
        """The task verdicts, the evaluation set grown while one is inconclusive (see ``grown_verdicts``)."""
        numerics = self.config.numerics
        steps = self.evaluation_set.steps

        def evaluate(step: int) -> Evaluation:
            samples = self.evaluation_set.chunk(step)
            return self._evaluate(state.model, lambda size: pool.get(size)[0], samples, None if step else raw)

        def judged(found: Evaluation, baseline: Evaluation) -> list[MetricVerdict]:
            return judge(found, baseline, numerics.tolerances(precision), numerics.floor(precision),
                         numerics.confidence, numerics.bootstrap_resamples)  # fmt: skip

        def growing(step: int) -> None:
            self._status(
                f"{state.entry.name} · {backend.name}/{backend.device}/{precision} · inconclusive at "
                f"{steps[step - 1]} images: evaluating {steps[step]}"
            )

        return grown_verdicts(len(steps), evaluate, lambda step: self._baseline(state, step), judged, growing)

    def _diagnose(
        self,
        state: ModelState,
        backend: BackendConfig,
        precision: str,
        pool: RunnerPool,
        feeds: dict[str, np.ndarray],
    ) -> None:
        """After a failed reduced-precision check of a segbench fp16 graph: the layers where it first
        diverges from the fp32 graph, and which to keep in fp32 (a row at level ``diagnosis``)."""
        images = feeds[state.model.input_names[0]]
        _, info = pool.get(images.shape[2:])
        artifact = info.get("artifact") or {}
        if artifact.get("precision") != "fp16" or artifact.get("user_artifact"):
            return  # only segbench's own fp16 graphs have an fp32 twin to compare layer by layer
        self._status(f"{state.entry.name} · {backend.name}/{precision} · locating fp16 divergence")
        size = tuple(artifact["static_size"]) if artifact.get("static_size") else None
        row: dict[str, Any] = {"metric": "fp16 diagnosis", "value": None, "baseline": None, "delta": None,
                               "tolerance": None, "passed": None}  # fmt: skip
        try:
            fp32 = self._export(state, backend, size, "fp32")
            found = diagnose_precision(
                fp32.path, artifact["path"], {state.model.input_names[0]: images[:1]}, top=5
            )
        except Exception as exc:  # a diagnosis is a help: its failure must not hide the verdicts
            self._write_numerics(state, backend, precision, row, error=describe_error(exc), level="diagnosis")
            return
        summary = found.to_dict()
        summary.pop("layers", None)  # every layer of a large graph: too much for a results row
        first = found.first_divergent
        if first is not None:
            self.console.print(
                f"[yellow]{state.entry.name} {backend.name} {precision}:[/] first divergent layer "
                f"{escape(first.node)} ({first.op_type}, max rel err {first.max_rel_err:.3g}); "
                f"keep in fp32: {escape(', '.join(found.suggest_fp32) or '-')}"
            )
        self._write_numerics(state, backend, precision, {**row, "diagnosis": summary}, level="diagnosis")

    def _write_numerics(
        self,
        state: ModelState,
        backend: BackendConfig,
        precision: str,
        verdict: dict[str, Any],
        role: str = "candidate",
        error: str | None = None,
        level: str = "task",
    ) -> None:
        row = {
            "model": state.entry.name,
            "task": state.record["task"],
            "backend": backend.name,
            "backend_options": backend.variant(),
            "device": backend.device,
            "precision": precision,
            "role": role,
            "level": level,
            **verdict,
            "error": error,
        }
        self.numerics.write(row)
        self.summary.numerics.append(row)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunnerPool:
    """The active runners of one model x backend x precision, opened on first use and closed together.

    A graph with dynamic height/width serves every size with one runner; a model whose graphs are per
    size gets one export and one runner per input size. A failure to open is remembered, so every cell
    that needs that runner reports the same error without retrying the export.
    """

    def __init__(self, open_runner: Callable[[tuple[int, int] | None], tuple[Runner, dict]], per_size: bool):
        self._open = open_runner
        self._per_size = per_size
        self._entries: dict[tuple[int, int] | None, tuple[Runner, dict] | str] = {}

    def get(self, size: tuple[int, int]) -> tuple[Runner, dict[str, Any]]:
        key = tuple(size) if self._per_size else None
        return _once(self._entries, key, lambda: self._open(key))

    def close(self) -> None:
        for entry in self._entries.values():
            if not isinstance(entry, str):
                entry[0].__exit__(None, None, None)
        self._entries.clear()


class _StageFailed(Exception):
    """An earlier stage (export, session creation) failed; its message is reused for every cell."""


def _once(cache: dict, key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per key; a failure is cached as its message and raised as _StageFailed, so
    every cell that needs a failed export or session reports the same error without retrying it."""
    if key not in cache:
        try:
            cache[key] = compute()
        except _StageFailed as exc:
            cache[key] = str(exc)
        except Exception as exc:
            cache[key] = describe_error(exc)
    found = cache[key]
    if isinstance(found, str):
        raise _StageFailed(found)
    return found


def run_benchmark(
    config: BenchmarkConfig,
    out_dir: Path,
    console: Console | None = None,
    timing: bool = True,
    resume: bool = False,
) -> RunSummary:
    """Run the whole grid (or, without ``timing``, the numerics check alone), print the tables, and
    return the summary. With ``resume``, finish the run in ``out_dir``: cells and checks already
    written are skipped."""
    console = console or Console()
    summary = BenchmarkRun(config, out_dir, console, timing, resume).run()
    if timing:
        console.print(results_table(summary.results))
    if summary.numerics:
        console.print(numerics_table(summary.numerics))
    from segbench.reports.tables import outcome_line

    # The counts, then each failed cell and each failed or inconclusive check by name (plain text).
    outcome = outcome_line(summary.results if timing else [], summary.numerics, out_dir)
    console.print(outcome, markup=False, highlight=False, soft_wrap=True)
    return summary
