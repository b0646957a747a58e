"""Precision diagnosis: layer-by-layer comparison of an fp16 graph with its fp32 source."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from segbench.export.fp16 import convert_to_fp16
from segbench.export.fp16_diagnosis import FP16_MAX, diagnose_model, diagnose_precision
from segbench.export.fp16_emulation import emulate_low_precision
from segbench.export.onnx import export_onnx, parity_inputs
from segbench.models import build_model


class Overflowing(torch.nn.Module):
    """conv -> a conv whose outputs pass fp16's 65504 -> InstanceNorm (back into range) -> head."""

    task, input_names, output_names = "semantic", ("images",), ("logits",)
    size_divisor, dynamic_spatial, preferred_exporter, num_classes = 1, True, "torchscript", 2

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.big = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.norm = torch.nn.InstanceNorm2d(8)
        self.head = torch.nn.Conv2d(8, 2, 1)
        with torch.no_grad():
            # Positive weights under 1e4 (onnxconverter-common clamps larger fp16 weights to 1e4): each
            # is representable, their sums over 72 taps are not.
            self.big.weight.uniform_(5000.0, 9500.0)

    def preprocess(self, images):
        return {"images": (images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5) - 1.0}

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.big(torch.relu(self.stem(x))))))


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _node_reading(graph: onnx.GraphProto, tensor: str) -> str:
    return next(node.name for node in graph.node if tensor in node.input)


@pytest.fixture(scope="module")
def overflow(tmp_path_factory):
    model = Overflowing().eval()
    path = export_onnx(model, tmp_path_factory.mktemp("overflow") / "fp32.onnx", exporter="torchscript")
    fp32 = onnx.load(str(path))
    feeds = {"images": parity_inputs(model, 1, 48, 64, seed=0)}
    low, _ = convert_to_fp16(fp32, keep_ops=())  # nothing protected: the normalisation runs in fp16 too
    return fp32, low, feeds


def test_overflowing_conv_is_the_first_divergent_layer(overflow):
    fp32, low, feeds = overflow
    big = _node_reading(fp32.graph, "big.weight")
    norm = next(node.name for node in fp32.graph.node if node.op_type == "InstanceNormalization")
    diagnosis = diagnose_precision(fp32, low, feeds)

    first = diagnosis.first_divergent
    assert first is not None
    assert (first.node, first.op_type) == (big, "Conv")
    assert first.nonfinite > 0 and first.fp32_max_abs > FP16_MAX
    assert first.low_dtype == "float16" and not first.upstream_nonfinite
    # The layers before it are compared and fine: the divergence starts at the big conv.
    stem = next(layer for layer in diagnosis.layers if layer.node == _node_reading(fp32.graph, "stem.weight"))
    assert stem.index < first.index and stem.nonfinite == 0 and stem.max_rel_err < 1e-2
    assert [layer.node for layer in diagnosis.origins] == [big]
    # Everything downstream is poisoned (non-finite), and ranked first among the worst.
    assert diagnosis.worst[0].nonfinite > 0
    downstream = [layer for layer in diagnosis.layers if layer.index > first.index]
    assert downstream and all(layer.nonfinite > 0 and layer.upstream_nonfinite for layer in downstream)
    # The output node is matched although the converter renamed its output tensor.
    output_layer = next(layer for layer in diagnosis.layers if layer.output == "logits")
    assert output_layer.low_output != "logits"
    assert diagnosis.unmatched == []
    # The suggestion is the out-of-range region: the conv and the normalisation that reads its values.
    assert diagnosis.suggest_fp32 == [big, norm]
    assert diagnosis.suggest_ops == ["Conv", "InstanceNormalization"]


def test_suggested_keep_list_fixes_the_fp16_graph(overflow):
    fp32, low, feeds = overflow
    diagnosis = diagnose_precision(fp32, low, feeds)
    big = diagnosis.first_divergent.node
    reference = _run(fp32, feeds)
    assert not np.isfinite(_run(emulate_low_precision(low), feeds)).all()

    # The conv alone is not enough: its fp32 output is cast back to fp16 for the normalisation.
    only_conv, _ = convert_to_fp16(fp32, keep_ops=(), keep_nodes=[big])
    assert not np.isfinite(_run(emulate_low_precision(only_conv), feeds)).all()
    again = diagnose_precision(fp32, only_conv, feeds)
    assert again.first_divergent.op_type == "InstanceNormalization"

    fixed, report = convert_to_fp16(fp32, keep_ops=(), keep_nodes=diagnosis.suggest_fp32)
    assert report.kept_fp32 == {"Conv": 1, "InstanceNormalization": 1}
    output = _run(emulate_low_precision(fixed), feeds)
    assert np.isfinite(output).all()
    np.testing.assert_allclose(output, reference, rtol=0, atol=1e-2 * np.abs(reference).max())
    after = diagnose_precision(fp32, fixed, feeds)
    assert after.first_divergent is None and after.suggest_fp32 == []
    kept = {layer.node: layer.low_dtype for layer in after.layers}
    assert kept[big] == "float32"


def test_well_behaved_unet_has_no_divergent_layer(tmp_path):
    model = build_model("unet", options={"base_channels": 4, "num_classes": 3}).eval()
    fp32_path = export_onnx(model, tmp_path / "fp32.onnx", exporter="torchscript")
    low, _ = convert_to_fp16(onnx.load(str(fp32_path)))
    low_path = tmp_path / "fp16.onnx"
    onnx.save(low, str(low_path))

    diagnosis = diagnose_model(model, fp32_path, low_path, height=64, width=96, rel_threshold=0.05)
    assert diagnosis.first_divergent is None
    assert diagnosis.suggest_fp32 == [] and diagnosis.origins == []
    assert len(diagnosis.layers) > 5 and diagnosis.unmatched == []
    assert all(layer.cosine > 0.99 and layer.nonfinite == 0 for layer in diagnosis.layers)
    # fp16 rounding is visible (the graph really is emulated in fp16), just small.
    assert 0 < max(layer.max_rel_err for layer in diagnosis.layers) < 0.05
    assert [layer.index for layer in diagnosis.layers] == sorted(layer.index for layer in diagnosis.layers)
    assert len(diagnosis.worst) == 10
    assert [w.max_rel_err for w in diagnosis.worst] == sorted(
        (w.max_rel_err for w in diagnosis.worst), reverse=True
    )

    # Exposing the tensors in several runs gives the same comparison.
    feeds = {"images": parity_inputs(model, 1, 64, 96, seed=0)}
    chunked = diagnose_precision(fp32_path, low_path, feeds, rel_threshold=0.05, max_outputs_per_run=7)
    assert [layer.to_dict() for layer in chunked.layers] == [layer.to_dict() for layer in diagnosis.layers]


def test_to_dict_is_strict_json(overflow):
    fp32, low, feeds = overflow
    diagnosis = diagnose_precision(fp32, low, feeds, top=3)
    data = json.loads(json.dumps(diagnosis.to_dict(), allow_nan=False))
    assert data["first_divergent"]["node"] == diagnosis.first_divergent.node
    assert data["first_divergent"]["nonfinite"] > 0
    assert len(data["worst"]) == 3 and data["compared"] == len(diagnosis.layers) == len(data["layers"])
    assert data["suggest_fp32"] == diagnosis.suggest_fp32
    assert json.loads(json.dumps(diagnosis.layers[0].to_dict(), allow_nan=False))["index"] == 0


def test_emulation_rounds_every_stored_activation():
    """fp16 tensors of the emulated graph hold fp16 values: rounding and overflow between nodes show
    (onnxruntime's CPU provider would run this fp16 region in fp32)."""
    half = helper.make_tensor("one", TensorProto.FLOAT16, [], np.array([1.0], np.float16).tobytes(), raw=True)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
            helper.make_node("Mul", ["h", "one"], ["m"]),
            helper.make_node("Add", ["m", "one"], ["a"]),
            helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT),
        ],
        "fp16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        initializer=[half],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    emulated = emulate_low_precision(model)
    onnx.checker.check_model(emulated, full_check=True)
    assert all(init.data_type == TensorProto.FLOAT for init in emulated.graph.initializer)
    out = _run(emulated, {"x": np.array([1e5, 1.0001, 2049.0], np.float32)})
    # 1e5 overflows; 1.0001 rounds to 1; above 2048 fp16's spacing is 2: 2049 -> 2048, 2048 + 1 -> 2048.
    np.testing.assert_array_equal(out, np.array([np.inf, 2.0, 2048.0], np.float32))


def test_unnamed_nodes_are_matched_by_the_converters_names():
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], np.linspace(0.5, 2.0, 4, dtype=np.float32))
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "w"], ["m"]),
            helper.make_node("Add", ["m", "w"], ["a"]),
            helper.make_node("Relu", ["a"], ["y"]),
        ],
        "unnamed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        initializer=[weight],
    )
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    low, _ = convert_to_fp16(fp32, keep_ops=())
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)}
    diagnosis = diagnose_precision(fp32, low, feeds)
    assert [layer.op_type for layer in diagnosis.layers] == ["Mul", "Add", "Relu"]
    assert diagnosis.unmatched == [] and diagnosis.first_divergent is None
    assert all(
        layer.low_dtype == "float16" and 0 < layer.max_rel_err < 1e-3 for layer in diagnosis.layers[:2]
    )


def test_origin_already_in_fp32_suggests_its_low_precision_producer():
    """(x + 1000) - 1000: the Add's fp16 output keeps x to 0.5 only; the Sub, kept in fp32, is where the
    relative error shows, but the fix is the Add."""
    offset = helper.make_tensor("offset", TensorProto.FLOAT, [], [1000.0])
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "offset"], ["shifted"], name="shift"),
            helper.make_node("Sub", ["shifted", "offset"], ["y"], name="unshift"),
        ],
        "cancellation",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])],
        initializer=[offset],
    )
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    low, _ = convert_to_fp16(fp32, keep_ops=("Sub",))
    feeds = {"x": np.random.default_rng(0).uniform(-1, 1, 64).astype(np.float32)}
    diagnosis = diagnose_precision(fp32, low, feeds)
    shift, unshift = diagnosis.layers
    assert (shift.low_dtype, unshift.low_dtype) == ("float16", "float32")
    assert shift.max_rel_err < 1e-3 and unshift.max_rel_err > 0.05
    assert diagnosis.first_divergent == unshift and diagnosis.origins == [unshift]
    assert diagnosis.suggest_fp32 == ["shift"] and diagnosis.suggest_ops == ["Add"]
    fixed, _ = convert_to_fp16(fp32, keep_ops=("Sub",), keep_nodes=diagnosis.suggest_fp32)
    assert diagnose_precision(fp32, fixed, feeds).first_divergent is None
