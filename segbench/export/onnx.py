"""Export a segbench model to ONNX with dynamic batch/height/width, check it, and prove parity.

The graph is checked with ``onnx.checker`` (full check) and its raw outputs are compared with PyTorch's on
inputs whose batch and spatial sizes differ from the traced ones, so a graph that silently baked the traced
shape into a Reshape or Slice is caught here rather than in a benchmark result (the comparison itself is
``segbench.export.parity``).
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from segbench.errors import first_line
from segbench.export.cache import new_file_mode
from segbench.export.parity import (  # noqa: F401 (the parity check moved there; still importable here)
    PARITY_TOLERANCES,
    ParityReport,
    ParityTolerance,
    check_parity,
    cpu_session,
    parity_failure,
    parity_inputs,
    parity_shapes,
)
from segbench.models.base import SegmentationModel

DEFAULT_OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
# Trace at batch 2: torch.export specialises a dimension of size 1, so a batch-1 trace cannot be dynamic.
TRACE_BATCH = 2
# Dynamic axes of the NCHW input and of the dense outputs, which keep the input's batch and size.
DYNAMIC_DIMS = {0: "batch", 2: "height", 3: "width"}
# Protobuf cannot serialise a message over 2 GB; larger graphs keep their weights in a side file.
EXTERNAL_DATA_LIMIT = 2**31 - 2**24
# Loggers of the exporter and its optimiser: their warnings are about their own passes (onnxscript's
# "Skipping constant folding for op Split with multiple outputs", once per op), not the user's model.
EXPORTER_LOGGERS = ("onnxscript", "torch.onnx")


class ExportError(RuntimeError):
    """The model could not be exported, or the exported graph is not faithful to PyTorch."""


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
        fields["parity"] = [ParityReport.from_dict(report) for report in fields["parity"]]
        for key in ("static_size",):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        return cls(**fields)


@contextmanager
def quiet_exporter_logs(level: int = logging.ERROR) -> Iterator[None]:
    """Drop the exporters' log records below ``level`` during the block.

    Errors they log still print, and a failed export still raises with its message (export_onnx turns it
    into an ExportError). A logger whose level the user set (e.g. to debug the exporter) is left alone.
    """
    raised = [
        logger for name in EXPORTER_LOGGERS if (logger := logging.getLogger(name)).level == logging.NOTSET
    ]
    for logger in raised:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger in raised:
            logger.setLevel(logging.NOTSET)


def _initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(len(init.raw_data) or 4 * max(len(init.float_data), 1) for init in model.graph.initializer)


def save_onnx(model: onnx.ModelProto, path: str | Path, external_data: bool | None = None) -> Path:
    """Check ``model`` (onnx.checker, full check) and write it to ``path`` atomically.

    Weights go to ``PATH.data`` beside the graph when ``external_data`` is True, or (None) when the
    file would pass protobuf's 2 GB limit. Both files are written and checked in a temporary directory
    and moved into place data first, graph last: a graph file under the final name is always complete.
    Both get the permissions the umask gives a new file.
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
        # onnx writes the data file 0600: both files get a new file's normal mode before the rename.
        mode = new_file_mode(tmp_dir)
        for written in (tmp, Path(tmp_dir) / data_name):
            if written.exists():
                os.chmod(written, mode)
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
            with warnings.catch_warnings(), torch.no_grad(), quiet_exporter_logs():
                # Exporters warn about tracer internals that say nothing about the user's model.
                warnings.simplefilter("ignore")
                traced = model(example)
                traced_shapes = [tuple(t.shape) for t in (traced if isinstance(traced, tuple) else (traced,))]
                # Dense outputs keep the input's dynamic axes; the others (detections, queries) its batch.
                output_dims = [
                    dims if len(s) == 4 and s[2:] == (height, width) else batch_dims for s in traced_shapes
                ]
                export = functools.partial(
                    torch.onnx.export,
                    model,
                    (example,),
                    str(tmp),
                    input_names=[input_name],
                    output_names=output_names,
                    opset_version=opset,
                )
                if exporter == "dynamo":
                    dynamic = {i: torch.export.Dim(name, min=1 if i == 0 else 8) for i, name in dims.items()}
                    shapes = {"images": dynamic} if dynamic else None
                    export(dynamo=True, dynamic_shapes=shapes, verbose=False)
                else:
                    axes = {input_name: dims, **dict(zip(output_names, output_dims, strict=True))}
                    export(dynamo=False, dynamic_axes={k: v for k, v in axes.items() if v})
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
