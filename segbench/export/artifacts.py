"""Cached, verified ONNX exports: what ``segbench export`` and the harness both call.

``cached_export`` returns the graph for a model at a precision from the content-addressed cache (see
``segbench.export.cache``), exporting and parity-checking it on a miss. The cache key covers everything
that decides the graph's bytes: the model and its resolved options, a digest of its weights, the opset,
exporter, dynamic axes, simplification, precision, the versions of the libraries that write the graph,
and digests of segbench's own model and export code. An fp16 graph is converted from the fp32 graph of
the same key (itself cached), then checked against PyTorch at the fp16 tolerance.
"""

from __future__ import annotations

import inspect
import shutil
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from segbench import __version__
from segbench.cache_dir import cache_key, cache_root
from segbench.export import fp16 as fp16_module
from segbench.export import onnx as onnx_module
from segbench.export import parity as parity_module
from segbench.export.cache import (
    atomic_directory,
    file_digest,
    read_entry,
    state_dict_digest,
    write_meta,
)
from segbench.export.onnx import (
    DEFAULT_OPSET,
    ExportError,
    OnnxExport,
    export_and_verify,
    parity_failure,
    parity_shapes,
    verify_parity,
)
from segbench.files import atomic_write_bytes
from segbench.models.base import SegmentationModel

GRAPH_FILE = "model.onnx"
GRAPH_PRECISIONS = ("fp32", "fp16")
# Libraries whose version changes the written graph.
GRAPH_LIBRARIES = ("torch", "onnx", "onnxscript", "onnxslim", "onnxconverter-common", "transformers")


@dataclass(frozen=True)
class ExportRequest:
    """What to export: everything but the model itself, which the caller builds."""

    opset: int = DEFAULT_OPSET
    exporter: str | None = None  # None: the model's preferred exporter
    static_size: tuple[int, int] | None = None
    static_batch: int | None = None
    simplify: bool = False
    precision: str = "fp32"

    def for_model(self, model: SegmentationModel) -> ExportRequest:
        """This request with the model's defaults filled in, validated against the model."""
        if self.precision not in GRAPH_PRECISIONS:
            raise ExportError(f"no {self.precision} ONNX graphs: choose one of {', '.join(GRAPH_PRECISIONS)}")
        if self.static_size is None and not model.dynamic_spatial:
            raise ExportError(
                f"{type(model).__name__} graphs are exported per input size: give a static size (HxW)"
            )
        return replace(self, exporter=self.exporter or model.preferred_exporter)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _code_digest(*objects: Any) -> str:
    """Digest of the source files that define ``objects``: editing a model or the exporter invalidates
    the cache even when segbench's version number stays the same."""
    files = sorted({path for obj in objects if (path := inspect.getsourcefile(obj))})
    return cache_key({Path(f).name: file_digest(f) for f in files})


def export_key(
    model: SegmentationModel, model_name: str, request: ExportRequest, weights_sha256: str | None = None
) -> dict[str, Any]:
    """The fields the cache key hashes; stored beside the graph so a reader sees what it was made from.

    ``weights_sha256`` may pass the model's ``state_dict_digest`` when the caller has it already
    (hashing a large model's weights takes seconds).
    """
    return {
        "model": model_name,
        "model_class": type(model).__name__,
        "options": model.options,
        "weights_sha256": weights_sha256 or state_dict_digest(model.state_dict()),
        "opset": request.opset,
        "exporter": request.exporter,
        "dynamic_axes": {
            "batch": request.static_batch is None,
            "height_width": request.static_size is None,
        },
        "static_size": request.static_size,
        "static_batch": request.static_batch,
        "simplify": request.simplify,
        "precision": request.precision,
        "versions": {"segbench": __version__, **{lib: _version(lib) for lib in GRAPH_LIBRARIES}},
        # The parity module too: the cache stores the parity reports with the graph.
        "code": _code_digest(type(model), onnx_module, parity_module, fp16_module),
    }


def _entry_dir(root: Path, model_name: str, request: ExportRequest, key: str) -> Path:
    return root / "onnx" / f"{model_name}-{request.precision}-{key}"


def cached_export(
    model: SegmentationModel,
    model_name: str,
    request: ExportRequest,
    root: Path | None = None,
    weights_sha256: str | None = None,
    require_parity: bool = True,
) -> OnnxExport:
    """The verified ONNX graph for ``request``, from the cache or exported now (and cached).

    An fp32 graph that fails parity is an export error and is never cached. An fp16 graph is cached with
    its parity reports whatever they say, since a failing fp16 graph is what the numerics check and its
    layer-by-layer diagnosis examine; ``require_parity`` raises ExportError for it (the CLI's choice),
    and the harness passes False and lets the numerics check judge.
    """
    found = _cached_export(model, model_name, request, root, weights_sha256)
    failure = parity_failure(found.parity, found.precision)
    if require_parity and failure:
        raise ExportError(failure)
    return found


def _cached_export(
    model: SegmentationModel,
    model_name: str,
    request: ExportRequest,
    root: Path | None,
    weights_sha256: str | None,
) -> OnnxExport:
    start = time.perf_counter()
    request = request.for_model(model)
    root = root or cache_root()
    weights_sha256 = weights_sha256 or state_dict_digest(model.state_dict())
    fields = export_key(model, model_name, request, weights_sha256)
    key = cache_key(fields)
    entry = _entry_dir(root, model_name, request, key)
    meta = read_entry(entry)
    if meta is not None and (entry / GRAPH_FILE).is_file():
        found = OnnxExport.from_dict(meta["export"])
        return replace(found, path=entry / GRAPH_FILE, export_s=time.perf_counter() - start, cached=True)
    if entry.exists():  # damaged by hand (a file removed): rebuild it rather than trust any of it
        shutil.rmtree(entry)

    if request.precision == "fp16":
        fp32_request = replace(request, precision="fp32")
        source = _cached_export(model, model_name, fp32_request, root, weights_sha256)
    with atomic_directory(entry) as tmp:
        if request.precision == "fp32":
            made = export_and_verify(
                model,
                tmp / GRAPH_FILE,
                opset=request.opset,
                exporter=request.exporter,
                static_size=request.static_size,
                static_batch=request.static_batch,
                simplify=request.simplify,
            )
        else:
            report = fp16_module.convert_file_to_fp16(source.path, tmp / GRAPH_FILE)
            shapes = parity_shapes(model, request.static_size, request.static_batch)
            # Kept even when it fails: the numerics check and its diagnosis need the graph (see below).
            parity = verify_parity(model, tmp / GRAPH_FILE, shapes, precision="fp16", enforce=False)
            made = replace(source, parity=parity, precision="fp16", fp16=report.to_dict(), cached=False)
        made = replace(made, cache_key=key, export_s=time.perf_counter() - start)
        write_meta(tmp, {"key": fields, "export": {**made.to_dict(), "path": GRAPH_FILE}})
    return replace(made, path=entry / GRAPH_FILE)


def copy_graph(export: OnnxExport, destination: Path) -> Path:
    """Copy a cached graph to ``destination``, atomically; a graph with external data is re-saved so its
    data file takes the new name (``DESTINATION.data``), since a graph refers to its data by file name."""
    if export.path.with_name(export.path.name + ".data").is_file():
        import onnx

        return onnx_module.save_onnx(onnx.load(str(export.path)), destination, external_data=True)
    return atomic_write_bytes(destination, export.path.read_bytes())
