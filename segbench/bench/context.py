"""What the stages of a run share: the config, the sink, the log, the evaluation set, and per model its
built network, its baseline and the runners of the unit at hand.

Runners are opened through a :class:`RunnerPool` that the pipeline enters on an ExitStack, so every
runner is closed on every path out of a unit (a failed cell, a failed check, an interrupt).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segbench.backends import GRAPH, BackendConfig, Runner
from segbench.backends.base import GraphBackendConfig
from segbench.backends.onnxruntime_backend import OnnxRuntimeConfig
from segbench.backends.torch_backend import TorchConfig
from segbench.bench.inputs import build_imported, mismatch
from segbench.bench.numerics import EvaluationSet
from segbench.bench.plan import Cell, Unit
from segbench.bench.resume import FinishedWork
from segbench.bench.runlog import RunLog
from segbench.bench.sink import RecordSink
from segbench.config import BenchmarkConfig, FolderDatasetConfig, ModelEntry, onnx_model
from segbench.data.shapes import IGNORE_INDEX
from segbench.export.artifacts import ExportRequest, cached_export
from segbench.export.cache import state_dict_digest
from segbench.export.onnx import PARITY_TOLERANCES, OnnxExport, check_parity
from segbench.export.parity import parity_failure
from segbench.metrics.tasks import Evaluation
from segbench.models.base import SegmentationModel
from segbench.models.imported import ImportedModel, imported_stats
from segbench.models.onnx_graph import OnnxGraphModel
from segbench.models.registry import build_model, model_stats
from segbench.results.records import Provenance, Subject

# Exports a model's graph: (model, model name, request, weights digest) -> the verified graph.
Exporter = Callable[[SegmentationModel, str, ExportRequest, str], OnnxExport]


def cache_export(model: SegmentationModel, name: str, request: ExportRequest, weights: str) -> OnnxExport:
    """The export cache's graph; an fp16 graph failing its parity still runs: the numerics check judges
    it, and diagnoses it."""
    return cached_export(model, name, request, weights_sha256=weights, require_parity=False)


@dataclass(frozen=True)
class RunContext:
    """What every stage reads and where every stage writes; fixed for the run once built."""

    config: BenchmarkConfig
    out_dir: Path
    sink: RecordSink
    log: RunLog
    timing: bool
    provenance: Provenance = field(default_factory=Provenance)
    evaluation_set: EvaluationSet | None = None
    done: FinishedWork = field(default_factory=FinishedWork)
    exporter: Exporter = cache_export
    # The machine's measured matmul peak, {device: {precision: TFLOP/s}} (env.json ``peak_tflops``).
    peak_tflops: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ignore_index(self) -> int:
        dataset = self.config.numerics.dataset
        return dataset.ignore_index if isinstance(dataset, FolderDatasetConfig) else IGNORE_INDEX


PARITY_FAILED = "ONNX parity failed at input"  # how an export's parity failure reads (export.parity)


class StageFailed(Exception):
    """An earlier step (model build, export, session creation) failed; its one-line message is reused for
    every cell that needs it (the traceback was logged once, when it happened)."""


@dataclass
class ModelState:
    """One model entry while it runs: the built network (or why it could not be built), its resolved
    options, its baseline evaluations and the graphs exported for it."""

    entry: ModelEntry
    task: str
    options: dict[str, Any]
    model: SegmentationModel | None = None
    error: str | None = None
    baseline_chunks: list[Evaluation] = field(default_factory=list)  # per image-count step
    baseline_error: str | None = None  # why the baseline could not be evaluated
    per_size: bool = False  # its dynamic-size graph failed parity: export one graph per input size
    baseline_outputs: list[dict[str, Any]] = field(default_factory=list)  # raw, for the tensor check
    graphs: dict[Any, OnnxExport | dict | str] = field(default_factory=dict)
    weights_sha256: str | None = None
    stats: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)

    @property
    def built(self) -> SegmentationModel:
        """The built network, for the steps that run only once it was built (``error`` is None)."""
        if self.model is None:
            raise StageFailed(self.error or f"{self.entry.name}: the model was not built")
        return self.model

    def subject(self, backend: BackendConfig, precision: str) -> Subject:
        return Subject(
            model=self.entry.name,
            task=self.task,
            backend=backend.name,
            backend_options=backend.variant(),
            device=backend.device,
            precision=precision,
            weights=self.entry.weights,
            model_options=self.options,
        )

    def baseline_subject(self) -> Subject:
        """Whom the baseline rows name: PyTorch fp32 on the CPU, or onnxruntime for an ONNX file."""
        if self.entry.onnx is not None:
            return self.subject(OnnxRuntimeConfig(), "fp32")
        return self.subject(TorchConfig(), "fp32")

    def size_stats(self, height: int, width: int) -> dict[str, Any]:
        """Parameters and GFLOPs at one input size, counted once per model and size."""
        if (height, width) not in self.stats:
            if isinstance(self.model, OnnxGraphModel):
                self.stats[height, width] = {"params": self.model.params, "gflops": None}
            elif isinstance(self.model, ImportedModel):
                self.stats[height, width] = imported_stats(self.model, height, width)
            else:
                self.stats[height, width] = model_stats(self.entry.name, self.options, height, width)
        return self.stats[height, width]


def build_model_state(ctx: RunContext, entry: ModelEntry) -> ModelState:
    """Build the model; a failure is kept (every cell of the model reports it), not raised."""
    options = ctx.config.model_options(entry)
    state = ModelState(entry, entry.declared_task, options)
    try:
        model: SegmentationModel
        if entry.onnx is not None:
            model = state.model = onnx_model(ctx.config, entry)
        elif entry.module is not None:
            model = state.model = build_imported(ctx.config, entry)
        else:
            model = state.model = build_model(entry.name, entry.weights, options, seed=ctx.config.seed)
            state.options = model.options
        state.task = model.task  # a multi-task model (Mask2Former) serves the one asked for
    except Exception as exc:
        state.error = ctx.log.failure(f"{entry.name}: building the model", exc)
    return state


def once(cache: dict, key: Any, compute: Callable[[], Any], log: RunLog, where: str) -> Any:
    """``compute()`` once per key; a failure is logged, cached as its one-line message and raised as
    StageFailed, so every cell that needs a failed export or session reports it without retrying."""
    if key not in cache:
        try:
            cache[key] = compute()
        except StageFailed as exc:
            cache[key] = str(exc)
        except Exception as exc:
            cache[key] = log.failure(where, exc)
    found = cache[key]
    if isinstance(found, str):
        raise StageFailed(found)
    return found


def export_graph(
    ctx: RunContext,
    state: ModelState,
    backend: GraphBackendConfig,
    size: tuple[int, int] | None,
    precision: str,
) -> OnnxExport:
    """The model's verified ONNX graph for this backend's opset/exporter at ``precision`` (and size, for
    per-size models), looked up once per run."""
    request = ExportRequest(
        opset=backend.opset, exporter=backend.exporter, static_size=size, precision=precision
    )

    def export() -> OnnxExport:
        suffix = f", {size[0]}x{size[1]}" if size else ""
        ctx.sink.status(f"{state.entry.name}: {precision} ONNX graph (opset {request.opset}{suffix})")
        model = state.built
        if state.weights_sha256 is None:
            state.weights_sha256 = state_dict_digest(model.state_dict())
        return ctx.exporter(model, state.entry.name, request, state.weights_sha256)

    where = f"{state.entry.name}: exporting the {precision} ONNX graph"
    return once(state.graphs, request, export, ctx.log, where)


def user_graph(ctx: RunContext, state: ModelState, unit: Unit) -> dict[str, Any]:
    """A pre-exported file named in the YAML. An ONNX graph gets the parity check against PyTorch; one
    that fails it is refused (every cell says why) unless the entry has ``allow_mismatch: true``, when it
    runs with the failure recorded and shown. An engine is taken as is (only TensorRT can read it)."""
    path = unit.backend.artifact
    assert path is not None, "user_graph is for an entry with an artifact:"

    def check() -> dict[str, Any]:
        record: dict[str, Any] = {"path": str(path), "user_artifact": True, "parity": None}
        if path.suffix != ".onnx":
            return record
        ctx.sink.status(f"{state.entry.name}: parity of {path.name}")
        first = unit.served[0] if unit.served else Cell(256, 256, 1)  # a folder dataset's check
        tolerance = PARITY_TOLERANCES.get(unit.precision, PARITY_TOLERANCES["fp16"])
        found = check_parity(state.built, path, [(1, first.height, first.width)], tolerance=tolerance)
        record["parity"] = [asdict(report) for report in found]
        problems = [p for p in (mismatch(ctx.config, state.entry, unit.backend),
                                parity_failure(found, unit.precision)) if p]  # fmt: skip
        if problems and not unit.backend.allow_mismatch:
            raise StageFailed(f"{path.name} does not match {state.entry.name}: {'; '.join(problems)} "
                              "(allow_mismatch: true runs it anyway)")  # fmt: skip
        if problems:
            record["mismatch"] = "; ".join(problems)
            ctx.sink.note(f"{unit.where}: running {path.name} despite: {record['mismatch']}")
            ctx.log.info(f"{unit.where}: {path} runs with allow_mismatch: {record['mismatch']}")
        return record

    key = ("artifact", str(path), unit.precision)
    return once(state.graphs, key, check, ctx.log, f"{state.entry.name}: parity of {path}")


class RunnerPool:
    """The active runners of one unit, opened on first use and closed together.

    A graph with dynamic height/width serves every size with one runner; a model whose graphs are per
    size gets one export and one runner per input size. A failure to open is remembered, so every cell
    that needs that runner reports the same error without retrying the export.
    """

    def __init__(self, ctx: RunContext, state: ModelState, unit: Unit) -> None:
        self.ctx, self.state, self.unit = ctx, state, unit
        model = state.model
        # Whether segbench exports this unit's graph itself (and so may export it per size).
        self.exports = (
            model is not None
            and not isinstance(model, OnnxGraphModel)  # the file is the graph, for every size it takes
            and unit.spec.consumes == GRAPH
            and unit.backend.artifact is None
        )
        self.per_size = model is not None and self.exports and (state.per_size or not model.dynamic_spatial)
        self._entries: dict[tuple[int, int] | None, tuple[Runner, dict] | str] = {}
        # The raw batches of a failed reduced-precision check, left for the diagnosis stage.
        self.failed_check_outputs: list[dict[str, Any]] = []

    def get(self, size: tuple[int, int]) -> tuple[Runner, dict[str, Any]]:
        """The runner for ``size`` and what opening it cost (``cold_start``) and ran (``artifact``)."""
        if self.state.error is not None:
            raise StageFailed(self.state.error)
        height, width = size
        key = (height, width) if self.per_size else None
        where = f"{self.unit.where}: opening the runner"
        try:
            return once(self._entries, key, lambda: self._open(key), self.ctx.log, where)
        except StageFailed as exc:
            if key is not None or not self.exports or PARITY_FAILED not in str(exc):
                raise
        # The dynamic graph is wrong at sizes other than the traced one (sizes baked in as constants):
        # from now on this model's graphs are exported one per input size, each checked at its size.
        self.per_size = self.state.per_size = True
        self.ctx.sink.note(f"{self.unit.where}: the dynamic-size graph fails parity at other sizes; "
                           "exporting one graph per input size")  # fmt: skip
        self.ctx.log.info(f"{self.unit.where}: per-size export after a failed dynamic-size parity check")
        return self.get(size)

    def _open(self, size: tuple[int, int] | None) -> tuple[Runner, dict[str, Any]]:
        unit, state = self.unit, self.state
        shapes = sorted({(c.batch, 3, c.height, c.width) for c in unit.served if size in (None, c.size)})
        path, export_s, record = None, None, None
        if isinstance(state.model, OnnxGraphModel):
            path, record = state.model.path, {"path": str(state.model.path), "onnx_model": True}
        elif unit.backend.artifact is not None:
            record = user_graph(self.ctx, state, unit)
            path = unit.backend.artifact
        elif unit.spec.consumes == GRAPH:
            assert isinstance(unit.backend, GraphBackendConfig)  # BackendSpec checks a graph backend's config
            precision = unit.spec.graph_precision(unit.backend, unit.precision)
            export = export_graph(self.ctx, state, unit.backend, size, precision)
            path, export_s, record = export.path, export.export_s, export.to_dict()
        runner = unit.spec.make_runner(state.built, unit.backend, unit.precision, path, shapes)
        start = time.perf_counter()
        runner.__enter__()
        return runner, {
            "cold_start": {"export_s": export_s, "activate_s": time.perf_counter() - start},
            "artifact": record,  # the graph (or engine) this cell ran, with its parity against PyTorch
        }

    def close(self) -> None:
        for entry in self._entries.values():
            if not isinstance(entry, str):
                entry[0].__exit__(None, None, None)
        self._entries.clear()

    def __enter__(self) -> RunnerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
