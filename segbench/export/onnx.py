"""Export a segbench model to ONNX with dynamic batch/height/width, check it, and prove parity.

The graph is checked with ``onnx.checker`` (full check) and its raw outputs are compared with PyTorch's on
inputs whose batch and spatial sizes differ from the traced ones, so a graph that silently baked the traced
shape into a Reshape or Slice is caught here rather than in a benchmark result.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from segbench.errors import first_line
from segbench.metrics.tensors import detection_agreement
from segbench.models.base import SegmentationModel

DEFAULT_OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
# Trace at batch 2: torch.export specialises a dimension of size 1, so a batch-1 trace cannot be dynamic.
TRACE_BATCH = 2
# Dynamic axes of the NCHW input and of the dense outputs, which keep the input's batch and size.
DYNAMIC_DIMS = {0: "batch", 2: "height", 3: "width"}
# Protobuf cannot serialise a message over 2 GB; larger graphs keep their weights in a side file.
EXTERNAL_DATA_LIMIT = 2**31 - 2**24


class ExportError(RuntimeError):
    """The model could not be exported, or the exported graph is not faithful to PyTorch."""


@dataclass(frozen=True)
class ParityTolerance:
    """How close a graph's raw outputs must stay to PyTorch's: ``max|err| <= atol + rtol * max|torch|``
    for float outputs, and the share of argmax pixels (semantic) or confident detections (instance)
    that must agree."""

    atol: float
    rtol: float
    argmax_agreement: float
    detection_agreement: float


# fp16 graphs round every activation to 11 significant bits: errors of about 1e-3 relative per layer add
# up, so their bound is looser; the task metrics (the numerics check) judge whether that matters.
PARITY_TOLERANCES = {
    "fp32": ParityTolerance(atol=1e-4, rtol=1e-3, argmax_agreement=0.999, detection_agreement=0.99),
    "fp16": ParityTolerance(atol=1e-2, rtol=2e-2, argmax_agreement=0.99, detection_agreement=0.95),
}


@dataclass(frozen=True)
class ParityReport:
    """Raw-output agreement between PyTorch and ONNX Runtime on one input shape."""

    shape: tuple[int, ...]
    max_abs_err: float
    max_rel_err: float
    argmax_agreement: float | None  # semantic models: share of pixels with the same argmax class
    passed: bool
    # Instance models: share of confident PyTorch detections that ONNX Runtime reproduces.
    detection_agreement: float | None = None


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    opset: int
    exporter: str
    export_s: float  # seconds spent by this call: export + checks, or the cache lookup on a hit
    parity: list[ParityReport]
    precision: str = "fp32"
    static_size: tuple[int, int] | None = None
    static_batch: int | None = None
    simplified: bool = False
    cache_key: str | None = None
    cached: bool = False  # reused from the export cache rather than exported by this call
    fp16: dict | None = None  # what the fp16 conversion kept in fp32 (Fp16Report.to_dict())

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}

    @classmethod
    def from_dict(cls, data: dict) -> OnnxExport:
        fields = dict(data)
        fields["path"] = Path(fields["path"])
        fields["parity"] = [
            ParityReport(**{**report, "shape": tuple(report["shape"])}) for report in fields["parity"]
        ]
        for key in ("static_size",):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        return cls(**fields)


def _initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(len(init.raw_data) or 4 * max(len(init.float_data), 1) for init in model.graph.initializer)


def save_onnx(model: onnx.ModelProto, path: str | Path, external_data: bool | None = None) -> Path:
    """Check ``model`` (onnx.checker, full check) and write it to ``path`` atomically.

    Weights go to ``PATH.data`` beside the graph when ``external_data`` is True, or (None) when the
    file would pass protobuf's 2 GB limit. Both files are written and checked in a temporary directory
    and moved into place data first, graph last: a graph file under the final name is always complete.
    Note that saving with external data rewrites ``model``'s initializers as references in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external_data is None:
        external_data = _initializer_bytes(model) > EXTERNAL_DATA_LIMIT
    data_name = f"{path.name}.data"
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}-") as tmp_dir:
        tmp = Path(tmp_dir) / path.name
        if external_data:
            onnx.save_model(
                model,
                str(tmp),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
        else:
            onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        if external_data:
            os.replace(Path(tmp_dir) / data_name, path.parent / data_name)
        else:
            (path.parent / data_name).unlink(missing_ok=True)  # a stale data file of an earlier export
        os.replace(tmp, path)
    return path


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the shapes onnx's shape inference proves stored as value_info (for readers and
    for TensorRT's parser); the model as it was when inference cannot run on it."""
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference is a refinement; the graph is valid without it (checked separately)
        return model


def simplify_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding and dead-code / redundancy removal with onnxslim; the caller checks parity."""
    import onnxslim

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnxslim.slim(model)


def export_onnx(
    model: SegmentationModel,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    exporter: str = "dynamo",
    static_size: tuple[int, int] | None = None,
    static_batch: int | None = None,
    simplify: bool = False,
    external_data: bool | None = None,
) -> Path:
    """Write ``model`` to ``path`` as ONNX with a dynamic batch; return the path.

    Height and width are dynamic too, unless ``static_size`` fixes them: models whose exported graph
    cannot serve every size (``model.dynamic_spatial`` is False) get one graph per input size.
    ``static_batch`` fixes the batch. ``simplify`` runs onnxslim. The graph is checked (full check),
    carries the shapes shape inference proves, and appears atomically (see ``save_onnx``), so an
    interrupted export never leaves a truncated graph behind under the final name.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    divisor = max(model.size_divisor, 1)
    height, width = static_size or (3 * divisor if divisor > 1 else 96, 4 * divisor if divisor > 1 else 128)
    example = torch.zeros(static_batch or TRACE_BATCH, 3, height, width)
    dims = {
        i: name
        for i, name in DYNAMIC_DIMS.items()
        if not ((i == 0 and static_batch) or (i > 0 and static_size))
    }
    batch_dims = {0: dims[0]} if 0 in dims else {}
    input_name, output_names = model.input_names[0], list(model.output_names)
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}-export-") as tmp_dir:
            tmp = Path(tmp_dir) / "model.onnx"
            with warnings.catch_warnings(), torch.no_grad():
                # Exporters warn about tracer internals that say nothing about the user's model.
                warnings.simplefilter("ignore")
                traced = model(example)
                traced_shapes = [tuple(t.shape) for t in (traced if isinstance(traced, tuple) else (traced,))]
                # Dense outputs keep the input's dynamic axes; the others (detections, queries) its batch.
                output_dims = [
                    dims if len(s) == 4 and s[2:] == (height, width) else batch_dims for s in traced_shapes
                ]
                if exporter == "dynamo":
                    dynamic = {i: torch.export.Dim(name, min=1 if i == 0 else 8) for i, name in dims.items()}
                    specific = {
                        "dynamo": True,
                        "dynamic_shapes": {"images": dynamic} if dynamic else None,
                        "verbose": False,
                    }
                else:
                    axes = {input_name: dims, **dict(zip(output_names, output_dims, strict=True))}
                    specific = {"dynamo": False, "dynamic_axes": {k: v for k, v in axes.items() if v}}
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    input_names=[input_name],
                    output_names=output_names,
                    opset_version=opset,
                    **specific,
                )
            graph = onnx.load(str(tmp))  # with its external data, if the exporter wrote any
        if simplify:
            graph = simplify_onnx(graph)
        # A graph exported at a static size has exactly the traced output shapes (batch aside).
        _name_output_dims(graph, output_dims, traced_shapes if static_size else None)
        save_onnx(infer_shapes(graph), path, external_data)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{exporter} export failed: {type(exc).__name__}: {first_line(exc)}") from exc
    return path


def _name_output_dims(
    graph: onnx.ModelProto,
    output_dims: list[dict[int, str]],
    exact_shapes: list[tuple[int, ...]] | None = None,
) -> None:
    """Name each output's dynamic dims like the input's (the dynamo exporter writes expressions there),
    and write the static size of every other dim that shape inference can prove (the TorchScript exporter
    leaves auto-named symbols there, e.g. a detector's fixed detection count)."""
    try:
        inferred = {o.name: o for o in onnx.shape_inference.infer_shapes(graph).graph.output}
    except Exception:  # inference is a refinement; the declared shapes stay valid without it
        inferred = {}
    for position, (output, dims) in enumerate(zip(graph.graph.output, output_dims, strict=True)):
        shape = output.type.tensor_type.shape
        known = inferred.get(output.name)
        for index, dim in enumerate(shape.dim):
            if index in dims:
                if not dim.HasField("dim_value"):
                    dim.dim_param = dims[index]
            elif exact_shapes is not None:
                dim.dim_value = exact_shapes[position][index]
            elif known is not None and index < len(known.type.tensor_type.shape.dim):
                proven = known.type.tensor_type.shape.dim[index]
                if proven.HasField("dim_value") and not dim.HasField("dim_value"):
                    dim.dim_value = proven.dim_value


def parity_inputs(model: SegmentationModel, batch: int, height: int, width: int, seed: int) -> np.ndarray:
    """Preprocessed synthetic scenes: realistic inputs, so detectors see objects rather than noise."""
    from segbench.data.shapes import scene_images

    return model.preprocess(scene_images(batch, height, width, seed))[model.input_names[0]]


def cpu_session(path: str | Path, emulate_low_precision: bool = False, options: Any = None) -> Any:
    """An onnxruntime CPU session for the graph at ``path``.

    With ``emulate_low_precision``, an fp16 graph runs as its emulation (``segbench.metrics.diagnosis.
    emulate_low_precision``): onnxruntime's CPU provider would run whole fp16 regions in fp32 from
    fp16 weights, hiding activation rounding and overflow; the emulation rounds every fp16 tensor after
    the node that produces it, as fp16 storage on a GPU does.
    """
    import onnxruntime as ort

    if not emulate_low_precision or Path(f"{path}.data").is_file():  # (a >2 GB graph is run as it is)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    from segbench.metrics.diagnosis import emulate_low_precision as emulate

    graph = emulate(onnx.load(str(path)))
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


def check_parity(
    model: SegmentationModel,
    onnx_path: str | Path,
    shapes: list[tuple[int, int, int]],
    seed: int = 0,
    tolerance: ParityTolerance = PARITY_TOLERANCES["fp32"],
    emulate_low_precision: bool = False,
) -> list[ParityReport]:
    """Compare raw outputs of PyTorch and ONNX Runtime (CPU) for each ``(batch, height, width)``.

    Dense outputs must satisfy ``max|onnx - torch| <= atol + rtol * max|torch|`` for every float output,
    and for semantic models a share of pixels (99.9% in fp32) must keep their argmax class. Instance
    models are compared as detections (see ``detection_agreement``). A graph that cannot run at a shape
    (e.g. one specialised to its traced size) fails that shape.
    """

    session = cpu_session(onnx_path, emulate_low_precision)
    names = list(model.output_names)
    reports = []
    for index, (batch, height, width) in enumerate(shapes):
        shape = (batch, 3, height, width)
        x = parity_inputs(model, batch, height, width, seed + index)
        with torch.no_grad():
            raw = model(torch.from_numpy(x))
        expected = [t.numpy() for t in (raw if isinstance(raw, tuple) else (raw,))]
        try:
            actual = session.run(names, {model.input_names[0]: x})
        except Exception:
            reports.append(ParityReport(shape, float("inf"), float("inf"), None, False))
            continue
        if any(a.shape != b.shape for a, b in zip(actual, expected, strict=True)):
            reports.append(ParityReport(shape, float("inf"), float("inf"), None, False))
            continue
        if model.task == "instance":
            by_name = [dict(zip(names, outputs, strict=True)) for outputs in (expected, actual)]
            agreement, worst = detection_agreement(*by_name)
            passed = agreement >= tolerance.detection_agreement
            reports.append(ParityReport(shape, worst, 0.0, None, passed, agreement))
            continue
        max_abs = max_rel = 0.0
        passed = True
        for got, want in zip(actual, expected, strict=True):
            if not np.issubdtype(want.dtype, np.floating):
                passed &= bool(np.array_equal(got, want))
                continue
            abs_err = np.abs(got - want)
            worst = float(abs_err.max()) if abs_err.size else 0.0
            max_abs = max(max_abs, worst)
            if abs_err.size:
                max_rel = max(max_rel, float((abs_err / np.maximum(np.abs(want), 1e-6)).max()))
            scale = float(np.abs(want).max()) if want.size else 0.0
            passed &= worst <= tolerance.atol + tolerance.rtol * scale
        agreement = None
        if model.task == "semantic":
            agreement = float((actual[0].argmax(1) == expected[0].argmax(1)).mean())
            passed &= agreement >= tolerance.argmax_agreement
        reports.append(ParityReport(shape, max_abs, max_rel, agreement, bool(passed)))
    return reports


def parity_shapes(
    model: SegmentationModel, static_size: tuple[int, int] | None = None, static_batch: int | None = None
) -> list[tuple[int, int, int]]:
    """Shapes for the parity check: batch 1 and 3 (the trace used 2) unless the batch is static; for
    dynamic graphs, sizes off the traced one and off the size divisor too."""
    batches = (static_batch, static_batch) if static_batch else (1, 3)
    if static_size:
        return [(batches[0], *static_size), (batches[1], *static_size)][: 1 if static_batch else 2]
    divisor = max(model.size_divisor, 8)
    return [(batches[0], 2 * divisor + 5, 3 * divisor - 3), (batches[1], 5 * divisor, 2 * divisor)]


def parity_failure(reports: list[ParityReport], precision: str) -> str | None:
    """One line naming the first failing shape of ``reports``, or None when all passed."""
    failed = [r for r in reports if not r.passed]
    if not failed:
        return None
    worst = failed[0]
    agreement = "" if worst.argmax_agreement is None else f", argmax agreement {worst.argmax_agreement:.4f}"
    if worst.detection_agreement is not None:
        agreement = f", detection agreement {worst.detection_agreement:.3f}"
    error = f"max abs err {worst.max_abs_err:.3g}{agreement}"
    return f"{precision} ONNX parity failed at input {worst.shape}: {error}"


def verify_parity(
    model: SegmentationModel,
    path: Path,
    shapes: list[tuple[int, int, int]],
    precision: str = "fp32",
    enforce: bool = True,
) -> list[ParityReport]:
    """``check_parity`` at the precision's tolerance (reduced precision through its emulation); with
    ``enforce``, raise ExportError naming the first failing shape."""
    emulate = precision != "fp32"
    reports = check_parity(
        model, path, shapes, tolerance=PARITY_TOLERANCES[precision], emulate_low_precision=emulate
    )
    failure = parity_failure(reports, precision)
    if enforce and failure:
        raise ExportError(failure)
    return reports


def export_and_verify(model: SegmentationModel, path: str | Path, **options: Any) -> OnnxExport:
    """``export_onnx(model, path, **options)``, then the parity check against PyTorch at untraced
    shapes; raise ExportError if it fails."""
    start = time.perf_counter()
    path = export_onnx(model, path, **options)
    static_size, static_batch = options.get("static_size"), options.get("static_batch")
    reports = verify_parity(model, path, parity_shapes(model, static_size, static_batch))
    return OnnxExport(
        path,
        options.get("opset", DEFAULT_OPSET),
        options.get("exporter", "dynamo"),
        time.perf_counter() - start,
        reports,
        static_size=static_size,
        static_batch=static_batch,
        simplified=options.get("simplify", False),
    )
