"""TensorRT readiness of an ONNX graph, checked without TensorRT or a GPU.

It answers "will TensorRT's ONNX parser take this graph, and what will the engine build need?" from
the graph alone: operators the parser does not support, attribute values it rejects, dynamic inputs
that an optimization profile must cover, and tensor types TensorRT casts down. It is a static check, not
a build: a graph that passes can still fail in TensorRT for reasons only a real build shows.

The operator list is the support matrix of onnx-tensorrt's ``docs/operators.md`` for the TensorRT 10.1
GA release (opsets 9 to 20), written out here as data; the restrictions checked are the ones that matter
for segmentation and detection graphs (TopK, ScatterND, Resize, GridSample, Loop). INT64 is a supported
type in TensorRT 10 and is only noted (TensorRT 8 and 9 cast it to INT32); DOUBLE is cast down and
flagged. Given the optimization profile an engine will be built with, every dynamic input dim must be
covered by it, and static dims must match it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

TENSORRT_VERSION = "10.1"
MAX_OPSET = 20
# Operators of the default ONNX domain that TensorRT 10.1's ONNX parser supports.
SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike
    Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
    DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
    GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
    GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
    IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
    MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
    OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
    ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
    ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
    Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
    Transpose Trilu Unsqueeze Upsample Where Xor
    """.split()  # noqa: SIM905 - a word table reads and diffs better than 150 quoted strings
)
MAX_TOPK = 3840
RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORDINATES = {
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "asymmetric",
    "align_corners",
}


@dataclass(frozen=True)
class Finding:
    # "error": the parser or build will refuse; "warning": works, with a cost or a duty; "info": a fact
    severity: str
    where: str  # node or tensor name
    message: str


@dataclass
class ReadinessReport:
    path: str
    opset: int
    op_counts: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def add(self, severity: str, where: str, message: str) -> None:
        self.findings.append(Finding(severity, where, message))


def _attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            value = onnx.helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes of the graph and of every subgraph (If branches, Loop bodies)."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                nodes += _all_nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    nodes += _all_nodes(subgraph)
    return nodes


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        value = _attribute(node, "value") if node.op_type == "Constant" else None
        if isinstance(value, onnx.TensorProto):  # a Constant's tensor (other Constants carry none)
            values[node.output[0]] = numpy_helper.to_array(value)
    return values


def _check_node(
    node: onnx.NodeProto, constants: dict[str, np.ndarray], ranks: dict[str, int], report: ReadinessReport
):
    where = node.name or f"{node.op_type}:{node.output[0] if node.output else '?'}"
    if node.domain not in ("", "ai.onnx"):
        report.add(
            "error", where, f"{node.domain}::{node.op_type} is a custom op: TensorRT needs a plugin for it"
        )
        return
    if node.op_type not in SUPPORTED_OPS:
        report.add(
            "error", where, f"{node.op_type} is not supported by TensorRT {TENSORRT_VERSION}'s ONNX parser"
        )
        return
    if node.op_type == "TopK":
        if _attribute(node, "sorted", 1) != 1:
            report.add("error", where, "TopK must be sorted (sorted=1)")
        k = constants.get(node.input[1]) if len(node.input) > 1 else None
        if k is not None and int(k.reshape(-1)[0]) >= MAX_TOPK:
            report.add("error", where, f"TopK K={int(k.reshape(-1)[0])} must be below {MAX_TOPK}")
    elif node.op_type == "MaxPool" and len([name for name in node.output if name]) > 1:
        # onnx-tensorrt's MaxPool importer asserts a single output (no Indices): SegNet-style unpooling
        # graphs need another form (segnet's unpool: argmax).
        report.add("error", where, "MaxPool with an Indices output is not supported")
    elif node.op_type == "ScatterND" and _attribute(node, "reduction", "none") != "none":
        report.add("error", where, "ScatterND with a reduction is not supported")
    elif node.op_type == "Resize":
        if _attribute(node, "mode", "nearest") not in RESIZE_MODES:
            report.add("error", where, f"Resize mode {_attribute(node, 'mode')!r}: only nearest and linear")
        if _attribute(node, "antialias", 0):
            report.add("error", where, "Resize with antialias is not supported")
        mode = _attribute(node, "coordinate_transformation_mode", "half_pixel")
        if mode not in RESIZE_COORDINATES:
            report.add("error", where, f"Resize coordinate_transformation_mode {mode!r} is not supported")
    elif node.op_type == "GridSample" and ranks.get(node.input[0], 4) != 4:
        report.add("error", where, "GridSample takes 4-D inputs only")
    elif node.op_type == "Loop":
        report.add("warning", where, "Loop: loop-carried tensors must keep their shape across iterations")


# Input name -> (min shape, max shape) of the optimization profile the engine will be built with.
ProfileRanges = Mapping[str, tuple[Sequence[int], Sequence[int]]]


def _check_input(
    name: str, dims: list[int | str], profile: ProfileRanges | None, report: ReadinessReport
) -> None:
    dynamic = [str(d) for d in dims if isinstance(d, str)]
    if profile is None:
        if dynamic:
            report.add(
                "warning",
                name,
                f"dynamic dims {', '.join(dynamic)} (shape {dims}): the engine needs an optimization "
                "profile with min/opt/max for them",
            )
        return
    if name not in profile:
        if dynamic:
            report.add("error", name, f"dynamic dims {', '.join(dynamic)} are not covered by any profile")
        return
    low, high = (list(shape) for shape in profile[name])
    if len(low) != len(dims) or len(high) != len(dims):
        report.add("error", name, f"profile shapes {low}..{high} do not have the input's rank {len(dims)}")
        return
    for index, dim in enumerate(dims):
        if isinstance(dim, int) and not low[index] == dim == high[index]:
            report.add(
                "error", name, f"profile {low}..{high} conflicts with static dim {index} = {dim} of {dims}"
            )
            return
    if dynamic:
        report.add("info", name, f"dynamic dims {', '.join(dynamic)} covered by the profile {low}..{high}")


def check_tensorrt_readiness(path: str | Path, profile: ProfileRanges | None = None) -> ReadinessReport:
    """Check an ONNX file against TensorRT's ONNX parser rules; see the module docstring.

    With ``profile``, dynamic inputs must be covered by it (an error otherwise); without one, each
    dynamic input is a warning that the build will need a profile.
    """
    model = onnx.load(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = ReadinessReport(str(path), opset)
    if opset > MAX_OPSET:
        report.add(
            "error",
            "opset",
            f"opset {opset} is above {MAX_OPSET}, the newest TensorRT {TENSORRT_VERSION} parses",
        )
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is a help, not a requirement
        inferred = model
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.HasField("tensor_type")}
    constants = _constant_values(model.graph)
    for node in _all_nodes(model.graph):
        report.op_counts[node.op_type] = report.op_counts.get(node.op_type, 0) + 1
        _check_node(node, constants, ranks, report)
    initializers = {init.name for init in model.graph.initializer}
    for tensor in model.graph.input:
        if tensor.name in initializers:
            continue
        dims = [
            d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
            for d in tensor.type.tensor_type.shape.dim
        ]
        _check_input(tensor.name, dims, profile, report)
    input_dims = {d.dim_param for t in model.graph.input for d in t.type.tensor_type.shape.dim if d.dim_param}
    for tensor in inferred.graph.output:
        dims = tensor.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") and d.dim_param not in input_dims for d in dims):
            # A size that is neither static nor an input dim may depend on the data (NonZero, NMS...).
            report.add(
                "warning",
                tensor.name,
                "output size not known statically: if data-dependent, the engine needs an output allocator",
            )
    doubles = [v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE]
    doubles += [i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.DOUBLE]
    for name in sorted(set(doubles)):
        report.add("warning", name, "double tensor: TensorRT casts it to float, clamping to +-FLT_MAX")
    io = list(model.graph.input) + list(model.graph.output)
    int64_io = [v.name for v in io if v.type.tensor_type.elem_type == onnx.TensorProto.INT64]
    if int64_io:
        report.add(
            "info",
            ", ".join(int64_io),
            "INT64 inputs/outputs: native in TensorRT 10 and later (TensorRT 8 and 9 cast them to INT32)",
        )
    return report
