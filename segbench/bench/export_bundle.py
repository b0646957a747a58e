"""The export use case behind ``segbench export``: a checked ONNX graph, optionally a TensorRT engine.

:func:`export_bundle` takes a :class:`BundleRequest` and writes into ``request.out``: the graph (exported
through the export cache, or reused from it), with ``trt`` the TensorRT readiness check against the
optimization profile and, unless ``check_only``, the engine (built through the engine cache), and a
manifest JSON saying what was made and how. It prints nothing: it returns a :class:`BundleOutcome` for
the caller to show, and reports progress through an optional ``status(text)`` callback.

Bad input raises :class:`~segbench.errors.ConfigError`; a missing TensorRT or GPU (with ``trt`` and not
``check_only``) raises :class:`~segbench.backends.tensorrt.install.TensorRTUnavailable`; both before
anything is exported or written.

It sits in the bench layer, above both ``export`` (the graph) and ``backends`` (the TensorRT engine), so
neither imports the other's use case.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segbench.backends.tensorrt import engine_cache
from segbench.backends.tensorrt.build import EngineBuildError
from segbench.backends.tensorrt.engine_cache import EngineArtifact
from segbench.backends.tensorrt.install import import_tensorrt
from segbench.backends.tensorrt.precision import engine_graph_precision
from segbench.backends.tensorrt.profile import OptimizationProfile, profile_from_shapes
from segbench.cache_dir import cache_root
from segbench.errors import ConfigError
from segbench.export.artifacts import ExportRequest, cached_export, copy_graph
from segbench.export.onnx import ExportError, OnnxExport
from segbench.export.tensorrt_readiness import ReadinessReport, check_tensorrt_readiness
from segbench.files import atomic_write_bytes
from segbench.models.registry import build_model, get_spec
from segbench.results.jsonl import write_json

# The profile's defaults when neither --sizes/--batch-sizes nor a static graph fix them.
DEFAULT_SIZES = ((256, 256), (512, 512))
DEFAULT_BATCH_SIZES = (1, 4)


@dataclass(frozen=True)
class BundleRequest:
    """What ``segbench export`` was asked for (its command-line options, typed)."""

    model: str
    weights: str = "trained"
    options: Mapping[str, Any] = field(default_factory=dict)
    opset: int = 18
    exporter: str | None = None  # None: the model's preferred exporter
    static_size: tuple[int, int] | None = None  # None: dynamic height and width
    batch: int | None = None  # None: dynamic batch
    fp16: bool = False
    simplify: bool = False
    trt: bool = False
    check_only: bool = False  # with trt: the readiness check only, no TensorRT or GPU needed
    sizes: Sequence[tuple[int, int]] | None = None  # what the engine's profile covers
    batch_sizes: Sequence[int] | None = None
    workspace_mb: int | None = None
    cache_dir: Path | None = None  # None: the default export / engine cache
    out: Path = Path("exports")


@dataclass
class BundleOutcome:
    """What :func:`export_bundle` made; ``export`` is None when the export failed (``export_error``)."""

    precision: str  # the engine's precision
    graph_precision: str  # the ONNX graph's: the engine's own (strongly typed on TensorRT 10 and 11)
    exit_code: int = 0  # 0 done; 1 export failed, graph not ready for TensorRT, or engine build failed
    export: OnnxExport | None = None
    export_error: str | None = None
    onnx_path: Path | None = None  # the graph's copy in ``out``
    profile: OptimizationProfile | None = None
    readiness: ReadinessReport | None = None
    engine: EngineArtifact | None = None
    engine_path: Path | None = None  # the engine's copy in ``out``
    engine_error: str | None = None
    manifest_path: Path | None = None


def profile_shapes(request: BundleRequest) -> list[tuple[int, int, int, int]]:
    """The NCHW shapes the engine must serve: sizes x batch sizes, defaulting to the static ones."""
    static, batch = request.static_size, request.batch
    if static and request.sizes and any(tuple(size) != static for size in request.sizes):
        raise ConfigError(f"--sizes must equal --static {static[0]}x{static[1]} for a static graph")
    if batch and request.batch_sizes and any(b != batch for b in request.batch_sizes):
        raise ConfigError(f"--batch-sizes must equal --batch {batch} for a static batch")
    sizes = request.sizes or ([static] if static else DEFAULT_SIZES)
    batches = request.batch_sizes or ([batch] if batch else DEFAULT_BATCH_SIZES)
    return [(b, 3, height, width) for height, width in sizes for b in batches]


def file_stem(request: BundleRequest, precision: str) -> str:
    """``model[-HxW][-bN][-precision]``: the name of the graph, engine and manifest in ``out``."""
    parts = [request.model]
    if request.static_size:
        parts.append(f"{request.static_size[0]}x{request.static_size[1]}")
    if request.batch:
        parts.append(f"b{request.batch}")
    if precision != "fp32":
        parts.append(precision)
    return "-".join(parts)


def export_bundle(request: BundleRequest, status: Callable[[str], None] | None = None) -> BundleOutcome:
    """Export (or reuse) the model's verified ONNX graph into ``request.out``; with ``trt``, check it
    and build an engine. See the module docstring for what is raised and returned."""
    report = status or (lambda text: None)
    get_spec(request.model)  # an unknown name lists the valid ones
    if request.check_only and not request.trt:
        raise ConfigError("--check-only needs --trt (it checks the graph an engine would be built from)")
    shapes = profile_shapes(request)
    precision = "fp16" if request.fp16 else "fp32"
    graph_precision = precision
    trt = None
    if request.trt and not request.check_only:
        # Before any work: a missing TensorRT or GPU is a one-line exit 2.
        trt = import_tensorrt()
        engine_cache.gpu_identity()
        graph_precision = engine_graph_precision(precision, trt)
    model = build_model(request.model, request.weights, dict(request.options))
    if not model.dynamic_spatial and request.static_size is None:
        raise ConfigError(f"{request.model} is exported per input size: give --static HxW")
    outcome = BundleOutcome(precision=precision, graph_precision=graph_precision)
    export_request = ExportRequest(
        opset=request.opset,
        exporter=request.exporter,
        static_size=request.static_size,
        static_batch=request.batch,
        simplify=request.simplify,
        precision=graph_precision,
    )
    root = request.cache_dir or cache_root()
    report(f"exporting {request.model} ({graph_precision})")
    try:
        export = cached_export(model, request.model, export_request, root)
    except ExportError as exc:
        outcome.export_error, outcome.exit_code = str(exc), 1
        return outcome
    outcome.export = export
    request.out.mkdir(parents=True, exist_ok=True)
    stem = file_stem(request, graph_precision)
    onnx_path = outcome.onnx_path = copy_graph(export, request.out / f"{stem}.onnx")

    profile = outcome.profile = profile_from_shapes(model.input_names[0], shapes)
    ranges = {profile.input_name: (profile.min, profile.max)} if request.trt else None
    readiness = outcome.readiness = check_tensorrt_readiness(onnx_path, ranges)
    manifest: dict[str, Any] = {
        "onnx": str(onnx_path),
        "export": export.to_dict(),
        "tensorrt_ready": readiness.ready,
    }
    if request.trt:
        manifest["profile"] = profile.to_dict()
    outcome.exit_code = 1 if request.trt and not readiness.ready else 0
    if trt is not None and readiness.ready:
        engine_path = outcome.engine_path = request.out / f"{file_stem(request, precision)}.engine"
        report(f"building the TensorRT {trt.__version__} engine ({precision})")
        try:
            engine = engine_cache.load_or_build_engine(
                export.path,
                precision,
                profile,
                cache_dir=root / "tensorrt",
                workspace_mb=request.workspace_mb,
            )
        except EngineBuildError as exc:
            # Recorded, not raised: the graph and the manifest saying why there is no engine are kept.
            outcome.engine_error, outcome.exit_code = str(exc), 1
            manifest["engine"] = {"error": str(exc)}
        else:
            atomic_write_bytes(engine_path, engine.path.read_bytes())
            outcome.engine, outcome.exit_code = engine, 0
            manifest["engine"] = {**engine.to_dict(), "copy": str(engine_path)}
    outcome.manifest_path = request.out / f"{stem}.json"
    write_json(outcome.manifest_path, manifest)
    return outcome
