"""fp16 ONNX graphs from fp32 ones: precision as a property of the graph.

TensorRT 11 builds strongly typed networks only (its FP16 builder flag is gone), and onnxruntime runs a
graph in the types it carries, so an fp16 deployment needs an fp16 graph. The conversion is
onnxconverter-common's ``convert_float_to_float16`` with inputs and outputs kept fp32 (the casts sit at
the graph boundary, so every backend feeds and reads the same arrays) and an fp32 keep-list:

- numerically fragile ops: normalisations, Softmax, reductions, Exp/Log/Pow/Sqrt/Div, Erf, Sin/Cos
  (positional encodings of large arguments), GridSample (deformable-attention sampling);
- the box arithmetic of detectors: every node that computes an input of NonMaxSuppression or RoiAlign,
  walking back from them until a Conv/MatMul/Gemm, whose outputs are cast up (fp16 has a spacing of
  0.5 px at 1000 px, too coarse for box decoding and NMS);
- onnxconverter-common's own default block list (ops whose fp16 kernels or attributes are unreliable,
  e.g. Resize's scales, TopK, Range).

Heavy compute (Conv, ConvTranspose, MatMul, Gemm, pointwise activations) runs in fp16.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

# Ops kept in fp32 because fp16 loses accuracy there (overflow in sums of squares, exp, large arguments).
FRAGILE_OPS = (
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "BatchNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceProd",
    "Exp",
    "Log",
    "Pow",
    "Sqrt",
    "Div",
    "Erf",
    "Sin",
    "Cos",
    "GridSample",
)
# Ops whose box / score inputs are computed in fp32 (see the module docstring).
BOX_CONSUMERS = ("NonMaxSuppression", "RoiAlign")
# Where the backward walk from a box consumer stops: these stay fp16, their outputs are cast up.
HEAVY_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum"})


@dataclass(frozen=True)
class Fp16Report:
    """What the conversion did: node counts by computed type, and the fp32 nodes by op type."""

    fp16_nodes: int
    fp32_nodes: int
    kept_fp32: dict[str, int] = field(default_factory=dict)
    casts_added: int = 0

    def to_dict(self) -> dict:
        return {
            "fp16_nodes": self.fp16_nodes,
            "fp32_nodes": self.fp32_nodes,
            "kept_fp32": self.kept_fp32,
            "casts_added": self.casts_added,
        }


def box_arithmetic_nodes(graph: onnx.GraphProto) -> set[str]:
    """Names of the nodes that compute (part of) an input of NonMaxSuppression or RoiAlign, walking
    back through the graph and stopping at heavy ops."""
    producer = {out: node for node in graph.node for out in node.output}
    keep: set[str] = set()
    stack = [name for node in graph.node if node.op_type in BOX_CONSUMERS for name in node.input]
    seen: set[str] = set()
    while stack:
        tensor = stack.pop()
        if tensor in seen or tensor not in producer:
            continue
        seen.add(tensor)
        node = producer[tensor]
        if node.op_type in HEAVY_OPS:
            continue
        if node.op_type != "Constant":  # constants follow their consumers' type
            keep.add(node.name)
        stack.extend(node.input)
    return keep


def _name_nodes(graph: onnx.GraphProto) -> None:
    # node_block_list works by name; exporters leave some nodes unnamed.
    used = {node.name for node in graph.node if node.name}
    for index, node in enumerate(graph.node):
        if not node.name:
            candidate = f"{node.op_type}_fp16conv_{index}"
            while candidate in used:
                candidate += "_"
            node.name = candidate
            used.add(candidate)


def _fix_cast_targets(graph: onnx.GraphProto) -> None:
    """Point existing ``Cast(to=float)`` nodes at float16 where the converter made their output fp16.

    onnxconverter-common rewrites the declared type of every float tensor in the fp16 region but leaves
    the ``to`` attribute of the exporter's own Casts (e.g. int shape arithmetic cast to float) at float,
    which gives a graph whose declared and computed types differ; onnx's checker rejects it.
    """
    fp16 = {
        info.name
        for info in list(graph.value_info) + list(graph.output)
        if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    }
    for node in graph.node:
        if node.op_type != "Cast" or node.output[0] not in fp16:
            continue
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                attribute.i = onnx.TensorProto.FLOAT16


def _restore_fp32_outputs(graph: onnx.GraphProto, fp32_outputs: set[str]) -> None:
    """Make outputs that were fp32 fp32 again.

    With ``keep_io_types``, onnxconverter-common still declares an output fp16 (and casts to fp16)
    when the node producing it is on the block list, so the graph's outputs would depend on which ops
    are kept; inputs and outputs must keep their types at the boundary whatever the keep-list is.
    """
    producers = {out: node for node in graph.node for out in node.output}
    for output in graph.output:
        if output.name not in fp32_outputs or output.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16:
            continue
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        node = producers.get(output.name)
        if node is not None and node.op_type == "Cast":
            for attribute in node.attribute:
                if attribute.name == "to":
                    attribute.i = onnx.TensorProto.FLOAT
            continue
        # Rename the fp16 tensor and cast it up under the output's name.
        inner = f"{output.name}_fp16"
        if node is not None:
            node.output[list(node.output).index(output.name)] = inner
        for consumer in graph.node:
            for index, name in enumerate(consumer.input):
                if name == output.name:
                    consumer.input[index] = inner
        graph.node.append(
            onnx.helper.make_node(
                "Cast", [inner], [output.name], to=onnx.TensorProto.FLOAT, name=f"{output.name}_cast_fp32"
            )
        )


def _node_types(graph: onnx.GraphProto) -> dict[str, int]:
    """Each node's computed float type, read from its first float output's declared type."""
    types = {
        info.name: info.type.tensor_type.elem_type
        for info in list(graph.value_info) + list(graph.output) + list(graph.input)
    }
    return {node.name: types.get(node.output[0], 0) for node in graph.node if node.output}


def convert_to_fp16(
    model: onnx.ModelProto,
    keep_ops: Iterable[str] = FRAGILE_OPS,
    keep_nodes: Iterable[str] = (),
) -> tuple[onnx.ModelProto, Fp16Report]:
    """An fp16 copy of an fp32 graph with fp32 inputs/outputs and the keep-list in fp32."""
    from onnxconverter_common import float16

    model = onnx.ModelProto.FromString(model.SerializeToString())
    _name_nodes(model.graph)
    block_ops = sorted({*float16.DEFAULT_OP_BLOCK_LIST, *keep_ops})
    block_nodes = sorted({*keep_nodes, *box_arithmetic_nodes(model.graph)})
    casts_before = sum(node.op_type == "Cast" for node in model.graph.node)
    with warnings.catch_warnings():
        # It warns for every initializer value it clamps to fp16's range; the report counts what matters.
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=block_ops, node_block_list=block_nodes
        )
    _fix_cast_targets(converted.graph)
    fp32_outputs = {
        o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }
    _restore_fp32_outputs(converted.graph, fp32_outputs)
    types = _node_types(converted.graph)
    kept = Counter(
        node.op_type
        for node in converted.graph.node
        if types.get(node.name) == onnx.TensorProto.FLOAT and node.op_type not in ("Cast", "Constant")
    )
    report = Fp16Report(
        fp16_nodes=sum(t == onnx.TensorProto.FLOAT16 for t in types.values()),
        fp32_nodes=sum(kept.values()),
        kept_fp32=dict(kept.most_common()),
        casts_added=sum(node.op_type == "Cast" for node in converted.graph.node) - casts_before,
    )
    return converted, report


def convert_file_to_fp16(src: str | Path, dst: str | Path) -> Fp16Report:
    """Convert the fp32 graph at ``src`` and write the fp16 graph to ``dst`` (checked, atomically)."""
    from segbench.export.onnx import save_onnx

    converted, report = convert_to_fp16(onnx.load(str(src)))
    save_onnx(converted, dst)
    return report
