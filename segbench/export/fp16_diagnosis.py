"""Precision diagnosis: which layers of a low-precision graph diverge from fp32, and which to keep in fp32.

When an fp16 graph fails the numerics check, the final outputs say *that* it is wrong but not *where*.
This module compares the two graphs layer by layer, the way one compares intermediate outputs between
two runtimes:

1. Layers are matched by NODE NAME (the fp16 conversion of ``segbench.export.fp16`` keeps node names,
   naming unnamed nodes first, but inserts Casts and renames some tensors, e.g. the producer of a graph
   output writes ``<node>_cast_to_<output>``), and each matched node's first output is compared.
   Constants, Casts and nodes with non-float outputs (shape arithmetic) are skipped; nodes missing from
   the low-precision graph, or not float there, are listed as ``unmatched``.
2. Both graphs get those tensors as extra graph outputs and run in onnxruntime (CPU, graph
   optimisations off) on the same fp32 feeds; segbench's fp16 graphs keep fp32 inputs and outputs.
3. For every layer: max / mean absolute error, the max error relative to the layer's largest fp32
   magnitude, the cosine similarity, the fp32 max |value| (past fp16's 65504 a value cannot be stored)
   and the count of non-finite values in the low-precision output where fp32 is finite (overflow).
   Errors and cosine are computed over the positions finite in both outputs; the non-finite count
   reports the rest.

The low-precision graph is first rewritten by ``segbench.export.fp16_emulation.emulate_low_precision``
(``emulate=True``, the default), so it computes on the CPU as it would on a GPU (see that module).

A layer *diverges* when its relative error passes ``rel_threshold`` or it has non-finite values. Once a
layer diverges every layer downstream of it diverges too, so the report separates cause from
consequence: a layer is an *origin* when it diverges while none of the layers feeding it did (the
``upstream_*`` fields hold what its inputs carried). ``suggest_fp32`` lists the nodes to keep in fp32:

- each origin, in topological order (the first one is ``first_divergent``), when the low-precision graph
  computes it in low precision; an origin that already runs in fp32 only amplifies the rounding of its
  inputs, so its nearest low-precision producers are suggested instead;
- for an origin that overflows (its fp32 values pass fp16's range), the whole out-of-range region: the
  layers downstream whose fp32 values still pass 65504, and the layers that bring the values back into
  range (they take the out-of-range values as inputs). Keeping only the overflowing node in fp32 does
  not help: the converter casts its output back to fp16 for its fp16 consumers, and that cast overflows.

Limits:

- Kernel-internal precision is not modelled: a GPU kernel that accumulates in fp16, or a fused kernel
  (e.g. a normalisation's sum of squares) whose internal values overflow while its output stays in
  range, can fail on the GPU and pass here. Fusions that keep an intermediate in fp32 on the GPU make
  the GPU more accurate than the emulation.
- Tensors are compared element by element. After a data-dependent selection (TopK, NonMaxSuppression,
  an ArgMax feeding a Gather) whose ranking changes under rounding, near-tied rows swap places: the
  selected tensors then differ by whole rows although the detections agree, and the selection ops
  appear as origins (detectors are better judged by detection agreement). Integer tensors (the
  selected indices themselves) are not compared.
- A layer that diverges without non-finite values while its fp32 values stay in range may have
  weights past 1e4: onnxconverter-common clamps fp16 initializers to +-1e4 by default.
- Only the first output of each node is compared; nodes inside subgraphs (If, Loop, Scan) are neither
  compared nor emulated; nodes are matched by name only, so both graphs must come from the same source
  graph, and a name shared by several nodes matches none of them.
- All exposed tensors of one run are held in memory at once; ``max_outputs_per_run`` splits the
  comparison into several runs to bound that (each run executes the whole graph again).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from segbench.export.fp16_emulation import (
    LOW_PRECISION_TYPES,
    SERIALIZE_LIMIT,
    emulate_low_precision,
    load_graph,
    tensor_types,
)

FP16_MAX = 65504.0
FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
)
# Nodes whose outputs say nothing about a layer's numerics.
SKIPPED_OPS = frozenset({"Constant", "Cast", "CastLike"})


@dataclass(frozen=True)
class LayerDivergence:
    """How far one layer's output in the low-precision graph is from the fp32 graph's."""

    node: str  # the node's name (the same in both graphs)
    op_type: str  # its ONNX op type, e.g. Conv
    output: str  # the compared tensor in the fp32 graph
    index: int  # topological position of the node in the fp32 graph
    max_abs_err: float  # largest |low - fp32| over the positions finite in both
    max_rel_err: float  # max_abs_err / fp32_max_abs (max_abs_err itself when fp32 is all zero)
    mean_abs_err: float  # mean |low - fp32| over the positions finite in both
    cosine: float  # cosine similarity of the two outputs over the positions finite in both
    nonfinite: int  # inf/nan in the low-precision output where fp32 is finite: overflow
    fp32_max_abs: float  # largest finite |value| of the fp32 output: past 65504 fp16 overflows
    low_output: str = ""  # the compared tensor in the low-precision graph (the converter renames some)
    low_dtype: str = ""  # the type the low-precision graph computes this node's output in
    upstream_rel_err: float = 0.0  # largest max_rel_err among the compared layers feeding this one
    upstream_nonfinite: bool = False  # whether a compared layer feeding this one had non-finite values

    def diverges(self, rel_threshold: float) -> bool:
        return self.nonfinite > 0 or self.max_rel_err > rel_threshold

    def is_origin(self, rel_threshold: float) -> bool:
        """Diverges while none of the layers feeding it did: the divergence starts here."""
        return self.diverges(rel_threshold) and not (
            self.upstream_nonfinite or self.upstream_rel_err > rel_threshold
        )

    def to_dict(self) -> dict:
        return {key: _json_value(value) for key, value in asdict(self).items()}


@dataclass
class PrecisionDiagnosis:
    """Layer-by-layer comparison of a low-precision graph with its fp32 source."""

    first_divergent: LayerDivergence | None  # the first diverging layer in topological order; None: none does
    # The worst layers, at most ``top`` (5 in a run's row): non-finite ones first, then by max_rel_err.
    worst: list[LayerDivergence]
    layers: list[LayerDivergence]
    suggest_fp32: list[str]  # node names for convert_to_fp16's keep_nodes
    rel_threshold: float  # the max_rel_err past which a layer diverges
    suggest_ops: list[str] = field(default_factory=list)  # the op types of suggest_fp32
    unmatched: list[str] = field(default_factory=list)  # fp32 float layers that could not be compared

    @property
    def origins(self) -> list[LayerDivergence]:
        """The layers where a divergence starts, in topological order."""
        return [layer for layer in self.layers if layer.is_origin(self.rel_threshold)]

    def to_dict(self) -> dict:
        return {
            "rel_threshold": self.rel_threshold,
            "first_divergent": None if self.first_divergent is None else self.first_divergent.to_dict(),
            "worst": [layer.to_dict() for layer in self.worst],
            "suggest_fp32": list(self.suggest_fp32),
            "suggest_ops": list(self.suggest_ops),
            "compared": len(self.layers),
            "unmatched": list(self.unmatched),
            "layers": [layer.to_dict() for layer in self.layers],
        }


def _json_value(value: Any) -> Any:
    # Strict JSON has no inf/nan.
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _name_nodes(graph: onnx.GraphProto) -> None:
    # The same naming as the fp16 conversion, so unnamed nodes of the fp32 graph match its names.
    from segbench.export.fp16 import _name_nodes as name_nodes

    name_nodes(graph)


def _dtype_name(elem_type: int) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name if elem_type else ""


def _run(
    model: onnx.ModelProto, names: Sequence[str], types: Mapping[str, int], feeds: Mapping[str, np.ndarray]
) -> list[np.ndarray]:
    """Run ``model`` with ``names`` added to its outputs; return those tensors."""
    import onnxruntime as ort

    declared = {output.name for output in model.graph.output}
    for name in names:
        if name not in declared:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
            declared.add(name)
    options = ort.SessionOptions()
    # Unoptimised, so that no pair of casts around an fp16 value is folded away with its rounding.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    inputs = {}
    for graph_input in model.graph.input:
        if graph_input.name in feeds:
            array = np.asarray(feeds[graph_input.name])
            elem_type = graph_input.type.tensor_type.elem_type
            if elem_type in FLOAT_TYPES and array.dtype.kind == "f":
                array = array.astype(onnx.helper.tensor_dtype_to_np_dtype(elem_type), copy=False)
            inputs[graph_input.name] = array
    providers = ["CPUExecutionProvider"]
    if model.ByteSize() < SERIALIZE_LIMIT:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        return session.run(list(names), inputs)
    with tempfile.TemporaryDirectory(prefix="segbench-diagnosis-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data")
        session = ort.InferenceSession(str(path), options, providers=providers)
        return session.run(list(names), inputs)


def _compare(reference: np.ndarray, low: np.ndarray) -> dict[str, float | int]:
    ref = np.asarray(reference, dtype=np.float64).ravel()
    got = np.asarray(low).astype(np.float32).astype(np.float64).ravel()
    ref_finite = np.isfinite(ref)
    got_finite = np.isfinite(got)
    both = ref_finite & got_finite
    nonfinite = int(np.count_nonzero(ref_finite & ~got_finite))
    fp32_max_abs = float(np.abs(ref[ref_finite]).max()) if ref_finite.any() else 0.0
    if not both.any():
        return {
            "max_abs_err": 0.0,
            "max_rel_err": 0.0,
            "mean_abs_err": 0.0,
            "cosine": 1.0 if ref.size == 0 else 0.0,
            "nonfinite": nonfinite,
            "fp32_max_abs": fp32_max_abs,
        }
    a, b = ref[both], got[both]
    err = np.abs(a - b)
    max_abs = float(err.max())
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm > 0:
        cosine = float(np.clip(np.dot(a, b) / norm, -1.0, 1.0))
    else:  # both zero: identical; one zero: no direction in common
        cosine = 1.0 if not a.any() and not b.any() else 0.0
    return {
        "max_abs_err": max_abs,
        "max_rel_err": max_abs / fp32_max_abs if fp32_max_abs > 0 else max_abs,
        "mean_abs_err": float(err.mean()),
        "cosine": cosine,
        "nonfinite": nonfinite,
        "fp32_max_abs": fp32_max_abs,
    }


class _Topology:
    """Walks between compared layers of the fp32 graph, through the nodes that are not compared but
    carry float values (Casts, unmatched nodes); integer shape arithmetic carries no rounding error."""

    def __init__(self, graph: onnx.GraphProto, compared: set[str], types: Mapping[str, int]) -> None:
        self.nodes = {node.name: node for node in graph.node}
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.compared = compared
        self.types = types
        self._up: dict[str, frozenset[str]] = {}

    def _carries_float(self, node: onnx.NodeProto) -> bool:
        return any(self.types.get(out) in FLOAT_TYPES for out in node.output if out)

    def upstream(self, node: onnx.NodeProto) -> set[str]:
        """The nearest compared layers that feed ``node``."""
        found: set[str] = set()
        for name in node.input:
            found |= self._upstream_of(name)
        return found

    def _upstream_of(self, tensor: str) -> frozenset[str]:
        if tensor in self._up:
            return self._up[tensor]
        self._up[tensor] = frozenset()  # a guard: graphs are acyclic, but never recurse forever
        producer = self.producer.get(tensor)
        result: frozenset[str] = frozenset()
        if producer is not None:
            if producer.name in self.compared:
                result = frozenset({producer.name})
            elif self._carries_float(producer):
                result = frozenset(self.upstream(producer))
        self._up[tensor] = result
        return result

    def downstream(self, node: onnx.NodeProto) -> set[str]:
        """The nearest compared layers that ``node`` feeds."""
        found: set[str] = set()
        stack = [out for out in node.output if out]
        seen: set[str] = set()
        while stack:
            tensor = stack.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            for consumer in self.consumers.get(tensor, ()):
                if consumer.name in self.compared:
                    found.add(consumer.name)
                elif self._carries_float(consumer):
                    stack.extend(out for out in consumer.output if out)
        return found


def _suggestions(
    layers: Sequence[LayerDivergence], topology: _Topology, rel_threshold: float, limit: int
) -> list[str]:
    by_name = {layer.node: layer for layer in layers}
    low_precision = {layer.node for layer in layers if layer.low_dtype in ("float16", "bfloat16")}
    suggested: dict[str, None] = {}  # an ordered set

    def nearest_low_precision(name: str) -> list[str]:
        found, stack, seen = [], [name], set()
        while stack:
            current = stack.pop()
            for producer in sorted(topology.upstream(topology.nodes[current])):
                if producer in seen:
                    continue
                seen.add(producer)
                if producer in low_precision:
                    found.append(producer)
                else:
                    stack.append(producer)
        return sorted(found, key=lambda n: by_name[n].index)

    origins = [layer for layer in layers if layer.is_origin(rel_threshold)][: max(limit, 1)]
    for origin in origins:
        if origin.node in low_precision:
            suggested[origin.node] = None
        else:
            suggested.update(dict.fromkeys(nearest_low_precision(origin.node)))
        if origin.fp32_max_abs <= FP16_MAX:
            continue
        # The out-of-range region: downstream while fp32 values pass fp16's range, plus the layers that
        # bring them back (they take the out-of-range values as inputs).
        stack, seen = [origin.node], {origin.node}
        while stack:
            for name in sorted(topology.downstream(topology.nodes[stack.pop()])):
                if name in seen:
                    continue
                seen.add(name)
                suggested[name] = None
                if by_name[name].fp32_max_abs > FP16_MAX:
                    stack.append(name)
    return sorted(suggested, key=lambda n: by_name[n].index)


def diagnose_precision(
    fp32_graph: str | Path | onnx.ModelProto,
    low_graph: str | Path | onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    top: int = 10,
    rel_threshold: float = 1e-2,
    max_outputs_per_run: int | None = None,
    emulate: bool = True,
) -> PrecisionDiagnosis:
    """Compare every layer of ``low_graph`` (an fp16 conversion of ``fp32_graph``) with ``fp32_graph``
    on ``feeds`` and say where they diverge and which nodes to keep in fp32 (see the module docstring).

    ``top`` bounds ``worst`` and the number of divergence origins that ``suggest_fp32`` is built from;
    ``max_outputs_per_run`` bounds the tensors exposed per onnxruntime run (None: all in one run).
    ``emulate`` runs ``emulate_low_precision(low_graph)`` (every stored activation rounded); False runs
    ``low_graph`` as onnxruntime's CPU provider does, which computes most fp16 nodes in fp32 without
    rounding their outputs (see the module docstring): only for comparing with that behaviour.
    """
    reference, low = load_graph(fp32_graph), load_graph(low_graph)
    _name_nodes(reference.graph)
    # Matching is by name: a name that several nodes share (ONNX allows it) identifies none of them.
    ref_counts = Counter(node.name for node in reference.graph.node)
    low_counts = Counter(node.name for node in low.graph.node)
    low_nodes = {node.name: node for node in low.graph.node if node.name and low_counts[node.name] == 1}
    ref_candidates = [
        node
        for node in reference.graph.node
        if node.op_type not in SKIPPED_OPS and node.output and node.output[0]
    ]
    ref_types = tensor_types(reference, [node.output[0] for node in ref_candidates])
    low_types = tensor_types(
        low, [low_nodes[n.name].output[0] for n in ref_candidates if n.name in low_nodes]
    )

    pairs: list[tuple[int, onnx.NodeProto, str]] = []  # (index, fp32 node, low output)
    unmatched: list[str] = []
    index_of = {id(node): index for index, node in enumerate(reference.graph.node)}
    for node in ref_candidates:
        ref_type = ref_types.get(node.output[0])
        if ref_type is not None and ref_type not in FLOAT_TYPES:
            continue  # shape arithmetic and other integer / bool tensors
        other = low_nodes.get(node.name) if ref_counts[node.name] == 1 else None
        low_output = other.output[0] if other is not None and other.output else ""
        if (
            ref_type is None
            or other is None
            or other.op_type != node.op_type
            or low_types.get(low_output) not in FLOAT_TYPES
        ):
            unmatched.append(node.name)
            continue
        pairs.append((index_of[id(node)], node, low_output))

    runnable, run_types = low, low_types
    if emulate:
        runnable = emulate_low_precision(low)
        run_types = {
            name: onnx.TensorProto.FLOAT if elem_type in LOW_PRECISION_TYPES else elem_type
            for name, elem_type in low_types.items()
        }
    chunk = max_outputs_per_run or max(len(pairs), 1)
    metrics: dict[str, dict[str, float | int]] = {}
    for start in range(0, len(pairs), chunk):
        part = pairs[start : start + chunk]
        ref_out = _run(load_graph(reference), [node.output[0] for _, node, _ in part], ref_types, feeds)
        low_out = _run(load_graph(runnable), [name for _, _, name in part], run_types, feeds)
        for (_, node, _), want, got in zip(part, ref_out, low_out, strict=True):
            if want.shape != got.shape:
                unmatched.append(node.name)
                continue
            metrics[node.name] = _compare(want, got)

    compared = {node.name for _, node, _ in pairs if node.name in metrics}
    topology = _Topology(reference.graph, compared, ref_types)
    layers: list[LayerDivergence] = []
    for index, node, low_output in pairs:
        if node.name not in metrics:
            continue
        upstream = [metrics[name] for name in topology.upstream(node)]
        layers.append(
            LayerDivergence(
                node=node.name,
                op_type=node.op_type,
                output=node.output[0],
                index=index,
                low_output=low_output,
                low_dtype=_dtype_name(low_types[low_output]),
                upstream_rel_err=max((float(m["max_rel_err"]) for m in upstream), default=0.0),
                upstream_nonfinite=any(int(m["nonfinite"]) > 0 for m in upstream),
                **metrics[node.name],  # type: ignore[arg-type]  # the int count and the float errors
            )
        )

    first = next((layer for layer in layers if layer.diverges(rel_threshold)), None)
    worst = sorted(layers, key=lambda layer: (layer.nonfinite == 0, -layer.max_rel_err, layer.index))[:top]
    suggest = _suggestions(layers, topology, rel_threshold, top)
    by_name = {layer.node: layer for layer in layers}
    return PrecisionDiagnosis(
        first_divergent=first,
        worst=worst,
        layers=layers,
        suggest_fp32=suggest,
        rel_threshold=rel_threshold,
        suggest_ops=sorted({by_name[name].op_type for name in suggest}),
        unmatched=unmatched,
    )


def _static_dims(graph: onnx.ModelProto) -> list[int | None]:
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    return [dim.dim_value if dim.HasField("dim_value") else None for dim in dims]


def diagnose_model(
    model: Any,
    fp32_path: str | Path,
    low_path: str | Path,
    batch: int = 1,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
    top: int = 10,
    rel_threshold: float = 1e-2,
) -> PrecisionDiagnosis:
    """``diagnose_precision`` of a segbench model's exported graphs on its preprocessed synthetic scenes.

    Height and width default to the graph's static input size, or to 128 rounded up to the model's
    size divisor; a static batch in the graph overrides ``batch``.
    """
    from segbench.export.onnx import parity_inputs

    dims = _static_dims(onnx.load(str(fp32_path), load_external_data=False))
    divisor = max(int(getattr(model, "size_divisor", 1)), 1)
    default = -(-128 // divisor) * divisor
    if len(dims) == 4:
        batch = dims[0] or batch
        height = height or dims[2]
        width = width or dims[3]
    images = parity_inputs(model, batch, height or default, width or default, seed)
    feeds = {model.input_names[0]: images}
    return diagnose_precision(fp32_path, low_path, feeds, top=top, rel_threshold=rel_threshold)
