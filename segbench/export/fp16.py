"""fp16 ONNX graphs from fp32 ones: precision as a property of the graph.

TensorRT 11 builds strongly typed networks only (its FP16 builder flag is gone), and onnxruntime runs a
graph in the types it carries, so an fp16 deployment needs an fp16 graph. The conversion is
onnxconverter-common's ``convert_float_to_float16`` with inputs and outputs kept fp32 (the casts sit at
the graph boundary, so every backend feeds and reads the same arrays) and an fp32 keep-list:

- numerically fragile ops: normalisations, Softmax, reductions, Exp/Log/Pow/Sqrt/Div, Erf, Sin/Cos
  (positional encodings of large arguments), GridSample (deformable-attention sampling);
- the score and box arithmetic of detectors, as detector deployments (MMDeploy, TensorRT) keep it:
  every node that computes the scores or boxes of NonMaxSuppression, the rois of RoiAlign or the
  input of TopK, walking back from them up to and including the first Conv/MatMul/Gemm on each path
  (the head's last layer: fp32 weights, its fp16 input cast up). Rounding scores to fp16 (a spacing of
  0.004 at 4-8) ties near-equal objectness logits, so TopK and NMS rank them by index and pick other
  proposals; box deltas and coordinates (0.125 px at 128-256 px) lose what box decoding and NMS need.
  RoiAlign's feature input is not walked (that would take the FPN into fp32), nor is Shape's (shape
  only);
- the Constants and Casts to float whose consumers all compute in fp32, so that e.g. score
  thresholds, box-coder clips and integer counts cast to float keep their fp32 values;
- onnxconverter-common's own default block list (ops whose fp16 kernels or attributes are unreliable,
  e.g. Resize's scales, TopK, Range).

The converter wraps each kept node in its own casts, so a tensor passed between two kept nodes is still
rounded by a ``Cast(fp16) -> Cast(fp32)`` pair (its clean-up of such pairs misses tensors with several
consumers: onnxconverter-common 1.16 compares the cast targets with 16/32 instead of the type enums).
Those pairs are removed here: a run of kept nodes computes and passes fp32 from end to end.

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
# The inputs of each score / box consumer whose producers are kept fp32 (see the module docstring):
# NonMaxSuppression's boxes and scores, RoiAlign's rois (not its feature map X), TopK's input.
SCORE_BOX_INPUTS: dict[str, tuple[int, ...]] = {"NonMaxSuppression": (0, 1), "RoiAlign": (1,), "TopK": (0,)}
# Where the backward walk from a consumer stops: the head's last layer is kept fp32, the trunk feeding
# it stays fp16.
HEAVY_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum"})
# Ops whose output depends on their input's shape only: the walk does not pass them.
SHAPE_OPS = frozenset({"Shape", "Size"})


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
    """Names of the nodes that compute (part of) a score or box input of NonMaxSuppression, RoiAlign or
    TopK (``SCORE_BOX_INPUTS``), walking back through the graph up to and including the first heavy op
    on each path. Constants are left out (see ``_fp32_sources``)."""
    producer = {out: node for node in graph.node for out in node.output}
    stack = [
        node.input[index]
        for node in graph.node
        for index in SCORE_BOX_INPUTS.get(node.op_type, ())
        if index < len(node.input)
    ]
    keep: set[str] = set()
    seen: set[str] = set()
    while stack:
        tensor = stack.pop()
        if tensor in seen or tensor not in producer:
            continue
        seen.add(tensor)
        node = producer[tensor]
        if node.op_type in SHAPE_OPS or node.op_type == "Constant":
            continue
        keep.add(node.name)
        if node.op_type not in HEAVY_OPS:  # a heavy op is the head's last layer: its input stays fp16
            stack.extend(node.input)
    return keep


def _is_cast_to(node: onnx.NodeProto, elem_type: int) -> bool:
    return node.op_type == "Cast" and any(a.name == "to" and a.i == elem_type for a in node.attribute)


def _fp32_sources(graph: onnx.GraphProto, block_ops: Iterable[str], block_nodes: Iterable[str]) -> set[str]:
    """Names of the nodes that bring float values in (float Constants, Casts to float) and whose
    consumers are all kept fp32.

    The converter makes every such node that is not itself blocked produce fp16 and casts its output up
    for fp32 consumers, which rounds e.g. a score threshold of 0.05 to 0.04999, and an integer count
    cast to float (a mask's pixel area in Mask2Former) to a multiple of 32 past 32768, or to inf past
    65504.
    """
    ops, nodes = set(block_ops), set(block_nodes)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {output.name for output in graph.output}

    def brings_floats(node: onnx.NodeProto) -> bool:
        if node.op_type == "Constant":
            return any(attribute.t.data_type == onnx.TensorProto.FLOAT for attribute in node.attribute)
        return _is_cast_to(node, onnx.TensorProto.FLOAT)

    return {
        node.name
        for node in graph.node
        if brings_floats(node)
        and node.output[0] not in outputs
        and consumers.get(node.output[0])
        and all(user.op_type in ops or user.name in nodes for user in consumers[node.output[0]])
    }


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


def _remove_round_trips(graph: onnx.GraphProto, source_nodes: set[str]) -> int:
    """Remove the converter's ``fp32 -> Cast(fp16) -> Cast(fp32)`` pairs between kept-fp32 nodes (see
    the module docstring); return the number of Casts removed.

    Only Casts that the converter added (names not in ``source_nodes``) are touched: a round trip the
    source graph itself makes is a rounding it asked for. A round trip that ends in a graph output
    becomes an Identity of the fp32 value, so the output keeps its name.
    """
    types = {
        info.name: info.type.tensor_type.elem_type
        for info in [*graph.value_info, *graph.input, *graph.output]
    }
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {output.name for output in graph.output}
    rename: dict[str, str] = {}
    dropped: set[str] = set()
    for down in graph.node:
        if (
            down.name in source_nodes
            or not _is_cast_to(down, onnx.TensorProto.FLOAT16)
            or types.get(down.input[0]) != onnx.TensorProto.FLOAT
        ):
            continue
        users = consumers.get(down.output[0], [])
        ups = [u for u in users if u.name not in source_nodes and _is_cast_to(u, onnx.TensorProto.FLOAT)]
        for up in ups:
            if up.output[0] in outputs:
                up.op_type = "Identity"
                del up.attribute[:]
                up.input[0] = down.input[0]
            else:
                rename[up.output[0]] = down.input[0]
                dropped.add(up.name)
        if len(ups) == len(users) and down.output[0] not in outputs:
            dropped.add(down.name)
    kept = [node for node in graph.node if node.name not in dropped]
    for node in kept:
        for index, name in enumerate(node.input):
            node.input[index] = rename.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)
    produced = {out for node in kept for out in node.output}
    stale = [info for info in graph.value_info if info.name not in produced]
    for info in stale:  # value_info of the removed tensors
        graph.value_info.remove(info)
    return len(dropped)


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
    source_nodes = {node.name for node in model.graph.node}
    block_ops = sorted({*float16.DEFAULT_OP_BLOCK_LIST, *keep_ops})
    blocked = {*keep_nodes, *box_arithmetic_nodes(model.graph)}
    block_nodes = sorted(blocked | _fp32_sources(model.graph, block_ops, blocked))
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
    _remove_round_trips(converted.graph, source_nodes)
    types = _node_types(converted.graph)
    # Casts and Constants follow the types around them: they are not counted as computing nodes.
    computing = {node.name for node in converted.graph.node if node.op_type not in ("Cast", "Constant")}
    kept = Counter(
        node.op_type
        for node in converted.graph.node
        if types.get(node.name) == onnx.TensorProto.FLOAT and node.name in computing
    )
    report = Fp16Report(
        fp16_nodes=sum(types[name] == onnx.TensorProto.FLOAT16 for name in computing),
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
