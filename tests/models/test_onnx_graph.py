"""The one rule for a graph's float precision (``segbench.models.onnx_graph.graph_precision``)."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from segbench.models.onnx_graph import graph_precision


def graph(weights: dict[int, int], constants: dict[int, int] | None = None, input_type=TensorProto.FLOAT):
    """A graph with a weight of ``n`` elements per element type, and Constant nodes likewise."""
    initializers = [helper.make_tensor(f"w{t}", t, [n], [0] * n) for t, n in weights.items()]
    nodes = [
        helper.make_node("Constant", [], [f"c{t}"], value=helper.make_tensor(f"c{t}", t, [n], [0] * n))
        for t, n in (constants or {}).items()
    ]
    nodes.append(helper.make_node("Identity", ["x"], ["y"]))
    x, y = (helper.make_tensor_value_info(name, input_type, [1]) for name in "xy")
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializers))


FP32, FP16, BF16, DOUBLE = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE


@pytest.mark.parametrize(
    ("weights", "constants", "input_type", "expected"),
    [
        ({FP32: 100}, None, FP32, "fp32"),
        ({FP16: 100}, None, FP32, "fp16"),
        ({BF16: 100}, None, FP32, "bf16"),
        # segbench's fp16 graphs keep a small fp32 keep-list: still fp16.
        ({FP16: 900, FP32: 100}, None, FP32, "fp16"),
        # A stray fp16 constant does not make an fp32 graph fp16.
        ({FP32: 900}, {FP16: 4}, FP32, "fp32"),
        # Constant nodes count like initializers (exporters write small weights as either).
        ({FP32: 10}, {FP16: 50}, FP32, "fp16"),
        ({DOUBLE: 100, FP16: 60}, None, FP32, "fp32"),  # fp64 weights count as fp32
        ({FP16: 50, FP32: 50}, None, FP32, "fp32"),  # a tie is no claim
        # No float weights: the float input's type decides.
        ({}, None, FP16, "fp16"),
        ({TensorProto.INT64: 100}, None, FP32, "fp32"),
    ],
)
def test_a_graph_computes_in_the_precision_of_most_of_its_weights(weights, constants, input_type, expected):
    model = graph(weights, constants, input_type)
    onnx.checker.check_model(model)
    assert graph_precision(model) == expected
