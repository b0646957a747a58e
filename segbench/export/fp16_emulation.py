"""fp16 / bf16 graphs run on the CPU as they compute on a GPU.

onnxruntime's CPU provider has no fp16 kernel for most ops, and it does not run them between
casts that round each output to fp16: its cast-insertion pass (``InsertedPrecisionFreeCast``, checked
with onnxruntime 1.31) casts fp16 weights up once and runs whole fp16 regions in fp32, dropping even the
graph's own Casts to fp16 in front of such regions. Run as is, an fp16 graph on the CPU is an fp32
graph with fp16-rounded weights: an activation that overflows fp16 never shows, and exposing a tensor as
an output changes what gets rounded. So the low-precision graph is rewritten by
``emulate_low_precision``: every fp16 (or bf16) tensor becomes an fp32 tensor holding
fp16-representable values, rounded by an explicit ``Cast(to=fp16) -> Cast(to=fp32)`` pair right after
the node that produces it (onnxruntime keeps explicit lossy cast pairs). Each node then computes in
fp32 from fp16-rounded inputs and weights, and its OUTPUT is rounded to fp16 as a GPU stores it:
overflow of outputs (inf, then nan downstream) and the propagation of rounding show.

Used by the export's parity check, the onnxruntime CPU backend and the layer diagnosis
(``segbench.export.fp16_diagnosis``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LOW_PRECISION_TYPES = frozenset({onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16})
# Integer attributes that name an output element type.
_DTYPE_ATTRIBUTES = ("to", "dtype", "output_dtype")
# Protobuf cannot serialise a message over 2 GB: larger graphs go to onnxruntime through a file.
SERIALIZE_LIMIT = 2**31 - 2**24


def load_graph(graph: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """A graph from a file, or a copy of one in memory (callers rewrite what they get)."""
    if isinstance(graph, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(graph)
        return copy
    return onnx.load(str(graph))


def tensor_types(model: onnx.ModelProto, wanted: Iterable[str]) -> dict[str, int]:
    """Element types of the graph's tensors: declared ones, then shape inference for missing ones."""
    graph = model.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    if any(name not in types for name in wanted) and model.ByteSize() < SERIALIZE_LIMIT:
        try:
            inferred = onnx.shape_inference.infer_shapes(model).graph
        except Exception:  # the declared types are all there is
            return types
        for info in [*inferred.value_info, *inferred.output]:
            if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
                types.setdefault(info.name, info.type.tensor_type.elem_type)
    return types


def _fp32_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    array = numpy_helper.to_array(tensor).astype(np.float32)
    return numpy_helper.from_array(array, tensor.name)


def emulate_low_precision(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """An fp32 graph that computes like the fp16 / bf16 graph ``model`` on a GPU, as far as the stored
    values go: every low-precision tensor is held in fp32 and rounded to its low-precision type by an
    explicit ``Cast -> Cast`` pair right after the node producing it (see the module docstring).

    Low-precision initializers, constants, inputs and outputs become fp32 (their values are exactly
    representable); Casts to the low type cast to fp32, the rounding pair after them does the rest.
    Tensor names are kept: a rounded tensor has its original name, the unrounded value is
    ``<name>__unrounded``. Subgraphs are left as they are.
    """
    model = load_graph(model)
    graph = model.graph
    types = tensor_types(model, [out for node in graph.node for out in node.output if out])
    low = {name: elem_type for name, elem_type in types.items() if elem_type in LOW_PRECISION_TYPES}
    used = {node.name for node in graph.node}

    def rounding(source: str, target: str, elem_type: int, stem: str) -> list[onnx.NodeProto]:
        name = f"{stem}__round"
        while f"{name}_low" in used or f"{name}_fp32" in used:
            name += "_"
        used.update({f"{name}_low", f"{name}_fp32"})
        return [
            onnx.helper.make_node("Cast", [source], [f"{target}__low"], to=elem_type, name=f"{name}_low"),
            onnx.helper.make_node(
                "Cast", [f"{target}__low"], [target], to=onnx.TensorProto.FLOAT, name=f"{name}_fp32"
            ),
        ]

    for index, init in enumerate(graph.initializer):
        if init.data_type in LOW_PRECISION_TYPES:
            graph.initializer[index].CopyFrom(_fp32_tensor(init))
    nodes: list[onnx.NodeProto] = []
    # Low-precision graph inputs: fed in fp32, rounded before their first use.
    renamed_inputs: dict[str, str] = {}
    initializers = {init.name for init in graph.initializer}
    for graph_input in graph.input:
        elem_type = graph_input.type.tensor_type.elem_type
        if elem_type in LOW_PRECISION_TYPES and graph_input.name not in initializers:
            graph_input.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
            rounded = f"{graph_input.name}__rounded"
            renamed_inputs[graph_input.name] = rounded
            nodes.extend(rounding(graph_input.name, rounded, elem_type, graph_input.name))
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in renamed_inputs:
                node.input[position] = renamed_inputs[name]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type in LOW_PRECISION_TYPES:
                attribute.t.CopyFrom(_fp32_tensor(attribute.t))
            elif (
                attribute.name in _DTYPE_ATTRIBUTES
                and attribute.type == onnx.AttributeProto.INT
                and attribute.i in LOW_PRECISION_TYPES
            ):
                attribute.i = onnx.TensorProto.FLOAT
        pairs: list[onnx.NodeProto] = []
        for position, name in enumerate(node.output):
            if name and name in low:
                node.output[position] = f"{name}__unrounded"
                pairs.extend(rounding(node.output[position], name, low[name], node.name or name))
        nodes.append(node)
        nodes.extend(pairs)
    del graph.node[:]
    graph.node.extend(nodes)
    for info in [*graph.value_info, *graph.output]:
        if info.type.tensor_type.elem_type in LOW_PRECISION_TYPES:
            info.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return model
