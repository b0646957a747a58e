"""TensorRT's side of the precision rule, and the checks that an artifact is at the precision it is run at.

The rule itself is :func:`segbench.backends.spec.graph_precision_for`, shared by every backend: the ONNX
graph carries the precision. All TensorRT adds is which precisions it lowers from the fp32 graph with a
builder flag (:func:`flag_lowered_precisions`): only bf16 on TensorRT 10, since segbench writes no bf16
graph and 10 still has ``BuilderFlag.BF16``. Everything else is a strongly typed network built from a
graph at the precision (on 11 every network is strongly typed), so the fp16 graph's fp32 keep-list holds;
10's ``FP16`` flag would let the builder pick each layer's precision and ignore it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from segbench.backends.base import BackendConfig, BackendError
from segbench.backends.spec import graph_precision_for
from segbench.backends.tensorrt.install import TensorRTUnavailable, import_tensorrt, tensorrt_version
from segbench.export.artifacts import GRAPH_PRECISIONS
from segbench.models import onnx_graph

if TYPE_CHECKING:
    from segbench.backends.tensorrt.engine import TensorRTEngine

PRECISIONS = ("fp32", "fp16", "bf16")


def flag_lowered_precisions(major: int) -> frozenset[str]:
    """The precisions TensorRT ``major`` makes from the fp32 graph with a builder flag (a weakly typed
    network): bf16 on 10; none on 11, which has no precision flags."""
    return frozenset({"bf16"}) if major == 10 else frozenset()


def engine_graph_precision(precision: str, trt: ModuleType) -> str:
    """The precision of the ONNX graph ``trt`` builds an engine at ``precision`` from (bf16 on TensorRT 11:
    a bf16 graph, which segbench does not write; :func:`backend_graph_precision` refuses that up front)."""
    major, _ = tensorrt_version(trt)
    return graph_precision_for(precision, flag_lowered_precisions(major))


def lowers_precision_by_flags(major: int, precision: str) -> bool:
    """Whether TensorRT ``major`` makes a ``precision`` engine from another graph with a builder flag: the
    rule's answer differs from ``precision`` (then the network is weakly typed and the flag is set)."""
    return graph_precision_for(precision, flag_lowered_precisions(major)) != precision


def backend_graph_precision(config: BackendConfig, precision: str) -> str:
    """The graph segbench exports for ``precision`` on the installed TensorRT (the backend's
    ``graph_precision``).

    A graph segbench cannot write (bf16 on TensorRT 11) is refused here, before any export or build, in
    one line for every cell of that precision; a bf16 graph named with ``artifact:`` does not come here.
    Without TensorRT the backend will not run anyway; the requested precision is returned as is.
    """
    try:
        trt = import_tensorrt()
    except TensorRTUnavailable:
        return precision
    needed = engine_graph_precision(precision, trt)
    if needed not in GRAPH_PRECISIONS:
        raise BackendError(
            f"tensorrt {precision} on TensorRT {trt.__version__} needs a {needed} ONNX graph, which "
            f"segbench does not write: run it at {' or '.join(GRAPH_PRECISIONS)}, or give a {needed} graph "
            "with artifact:"
        )
    return needed


def check_graph_precision(path: Path, precision: str, trt: ModuleType) -> None:
    """Refuse a graph whose float precision is not what an engine at ``precision`` is built from: the
    strongly typed build would keep the graph's types and label them ``precision`` (an fp32 graph run as
    fp16 would be an fp32 engine). The graph at the engine's precision itself is accepted too."""
    found = onnx_graph.graph_precision(onnx_graph.load_graph(path))
    needed = engine_graph_precision(precision, trt)
    major, _ = tensorrt_version(trt)
    if found not in (needed, precision):
        raise BackendError(
            f"{path.name} computes in {found}, but a TensorRT {major} {precision} engine is "
            f"built from a graph in {needed}: export it at {needed}, or run it at precision {found}"
        )


def engine_sidecar_precision(engine_path: Path) -> tuple[str, Path] | None:
    """The precision an engine file was built at, from the JSON segbench writes beside it (the engine
    cache's ``<key>.json``, ``segbench export``'s manifest ``<name>.json``), with that file; None when
    there is none or it does not say. An engine cannot be asked: its layers' precisions are listed only
    for engines built with detailed profiling verbosity."""
    sidecar = engine_path.with_suffix(".json")
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    engine = data.get("engine")
    claimed = data.get("precision") or (engine.get("precision") if isinstance(engine, dict) else None)
    return (str(claimed), sidecar) if claimed else None


def check_engine_precision(path: Path, precision: str) -> str:
    """Refuse a ``.engine`` artifact whose segbench sidecar says it was built at another precision; return
    how its precision was checked (for the row): against the sidecar, or, without one, only by its I/O
    types (:func:`check_engine_io`, after it is loaded)."""
    found = engine_sidecar_precision(path)
    if found is None:
        return "engine I/O types only (no segbench sidecar beside it)"
    built, sidecar = found
    if built != precision:
        raise BackendError(
            f"{path.name} was built at {built} ({sidecar.name} says so): run it at precision {built}"
        )
    return f"sidecar {sidecar.name}"


# Float I/O types that an engine built at a precision cannot have: a half-precision input or output
# means the engine was built for that precision, whatever the run is labelled.
_FOREIGN_IO = {"fp32": {torch.float16, torch.bfloat16}, "fp16": {torch.bfloat16}, "bf16": {torch.float16}}


def check_engine_io(engine: TensorRTEngine, path: Path, precision: str) -> None:
    """Refuse an engine whose half-precision inputs or outputs say it was built at another precision."""
    foreign = sorted(
        f"{name} ({dtype})".replace("torch.", "")
        for name, dtype in engine.io_dtypes.items()
        if dtype in _FOREIGN_IO.get(precision, set())
    )
    if foreign:
        raise BackendError(f"{path.name} has {', '.join(foreign)} I/O: it was not built at {precision}")
