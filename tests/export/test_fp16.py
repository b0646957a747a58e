"""fp16 ONNX graphs: what is converted, what is kept in fp32, and their numerics on onnxruntime CPU."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from segbench.export.artifacts import ExportRequest, cached_export
from segbench.export.fp16 import HEAVY_OPS, box_arithmetic_nodes, convert_to_fp16
from segbench.export.onnx import ExportError, cpu_session, export_onnx, parity_inputs
from segbench.export.tensorrt_readiness import check_tensorrt_readiness
from segbench.metrics.tensors import detection_agreement
from segbench.models import build_model
from segbench.models.onnx_graph import graph_precision

# These tests are about exporting and caching: each starts from an empty export cache.
pytestmark = pytest.mark.fresh_export_cache


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    infos = list(graph.value_info) + list(graph.input) + list(graph.output)
    types = {info.name: info.type.tensor_type.elem_type for info in infos}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


def run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})


def round_trips(graph: onnx.GraphProto) -> list[str]:
    """Casts to fp16 whose value is cast straight back to fp32: rounding inside an fp32 region."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def cast_to(node, elem_type):
        return node.op_type == "Cast" and node.attribute[0].i == elem_type

    return [
        node.name
        for node in graph.node
        if cast_to(node, TensorProto.FLOAT16)
        and any(cast_to(user, TensorProto.FLOAT) for user in consumers.get(node.output[0], []))
    ]


def conv(name, x, channels_in, channels_out, rng, nodes, inits):
    weight = rng.normal(size=(channels_out, channels_in, 1, 1)).astype(np.float32)
    inits.append(numpy_helper.from_array(weight, f"{name}.weight"))
    nodes.append(helper.make_node("Conv", [x, f"{name}.weight"], [f"{name}_out"], name=name))
    return f"{name}_out"


def head_graph() -> onnx.ModelProto:
    """A trunk conv feeding a score head (-> Div by a constant -> TopK and NMS scores), a box head
    (-> NMS boxes, RoiAlign rois) and a feature conv (-> RoiAlign X only)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    trunk = conv("trunk", "x", 4, 4, rng, nodes, inits)
    nodes.append(helper.make_node("Relu", [trunk], ["relu"], name="relu"))
    score = conv("score_head", "relu", 4, 1, rng, nodes, inits)
    temperature = numpy_helper.from_array(np.array(3.0001, np.float32))
    nodes.append(helper.make_node("Constant", [], ["temperature"], name="temperature", value=temperature))
    shapes = {"flat_shape": [1, 16], "box_shape": [1, 16, 4], "roi_shape": [16, 4], "k": [5], "axis1": [1]}
    for name, values in {**shapes, "batch_index": [0] * 16}.items():
        inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
    box = conv("box_head", "relu", 4, 4, rng, nodes, inits)
    feature = conv("feature_conv", "relu", 4, 4, rng, nodes, inits)
    nodes += [
        helper.make_node("Div", [score, "temperature"], ["scaled"], name="div"),
        helper.make_node("Reshape", ["scaled", "flat_shape"], ["flat"], name="flat"),
        helper.make_node("TopK", ["flat", "k"], ["top_values", "top_index"], name="topk"),
        helper.make_node("Unsqueeze", ["flat", "axis1"], ["nms_scores"], name="nms_scores"),
        helper.make_node("Sigmoid", [box], ["box_unit"], name="box_unit"),  # boxes inside the 4x4 map
        helper.make_node("Transpose", ["box_unit"], ["box_nhwc"], perm=[0, 2, 3, 1], name="box_nhwc"),
        helper.make_node("Reshape", ["box_nhwc", "box_shape"], ["boxes"], name="boxes"),
        helper.make_node("NonMaxSuppression", ["boxes", "nms_scores"], ["selected"], name="nms"),
        helper.make_node("Reshape", ["boxes", "roi_shape"], ["rois"], name="rois"),
        helper.make_node("RoiAlign", [feature, "rois", "batch_index"], ["pooled"], name="roi_align"),
    ]
    outputs = [
        helper.make_tensor_value_info("top_values", TensorProto.FLOAT, [1, 5]),
        helper.make_tensor_value_info("top_index", TensorProto.INT64, [1, 5]),
        helper.make_tensor_value_info("selected", TensorProto.INT64, ["selected", 3]),
        helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [16, 4, 1, 1]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])
    graph = helper.make_graph(nodes, "heads", [x], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_score_and_box_heads_are_kept_fp32_up_to_their_last_layer(tmp_path):
    source = head_graph()
    onnx.checker.check_model(source, full_check=True)
    kept = box_arithmetic_nodes(source.graph)
    # The heads' last convs and everything after them; not the trunk, nor RoiAlign's feature conv.
    assert {"score_head", "box_head", "div", "flat", "box_nhwc", "boxes", "rois"} <= kept
    assert not kept & {"trunk", "relu", "feature_conv"}
    converted, report = convert_to_fp16(source)
    onnx.checker.check_model(converted, full_check=True)
    types = value_types(converted)
    nodes = {node.name: node for node in converted.graph.node}
    for name in ("score_head", "box_head"):  # fp32 weights, fp32 output
        assert types[nodes[name].input[1]] == TensorProto.FLOAT
        assert types[nodes[name].output[0]] == TensorProto.FLOAT
    for name in ("trunk", "feature_conv"):
        assert types[nodes[name].input[1]] == TensorProto.FLOAT16
        assert types[nodes[name].output[0]] == TensorProto.FLOAT16
    assert report.kept_fp32.get("Conv") == 2
    # The constant divisor keeps its fp32 value (fp16 would make it 3.0).
    temperature = numpy_helper.to_array(nodes["temperature"].attribute[0].t)
    assert temperature.dtype == np.float32 and temperature == np.float32(3.0001)
    # Kept nodes pass fp32 to each other: no fp32 -> fp16 -> fp32 cast pairs are left.
    assert not round_trips(converted.graph)
    for name, inputs in (("topk", [0]), ("nms", [0, 1]), ("roi_align", [1])):
        assert all(types[nodes[name].input[i]] == TensorProto.FLOAT for i in inputs)
    path = tmp_path / "heads16.onnx"
    onnx.save(converted, str(path))
    x = np.random.default_rng(1).normal(size=(1, 4, 4, 4)).astype(np.float32)
    reference = ort.InferenceSession(source.SerializeToString(), providers=["CPUExecutionProvider"])
    want = reference.run(None, {"x": x})
    got = cpu_session(path, emulate_low_precision=True).run(None, {"x": x})
    np.testing.assert_allclose(got[0], want[0], rtol=2e-3, atol=2e-3)


def test_near_tied_scores_keep_their_fp32_ranking(tmp_path):
    """Scores 0.1 apart at 1000 (fp16 spacing 0.5 there): an fp16 score conv ties them and TopK ranks
    ties by index; kept fp32 from the graph input on, the ranking is fp32's. The logits also feed an
    fp16 node (Relu), so the converter leaves a Cast(fp16) -> Cast(fp32) pair on the fp32 path unless
    it is removed (its own clean-up skips tensors with several consumers)."""
    weight = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "score.weight")
    shape = numpy_helper.from_array(np.array([1, 4], np.int64), "shape")
    k = numpy_helper.from_array(np.array([4], np.int64), "k")
    nodes = [
        helper.make_node("Conv", ["x", "score.weight"], ["logits"], name="score"),
        helper.make_node("Reshape", ["logits", "shape"], ["flat"], name="flat"),
        helper.make_node("TopK", ["flat", "k"], ["values", "index"], name="topk"),
        helper.make_node("Relu", ["logits"], ["activation"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "ties",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 4])],
        [
            helper.make_tensor_value_info("index", TensorProto.INT64, [1, 4]),
            helper.make_tensor_value_info("activation", TensorProto.FLOAT, [1, 1, 1, 4]),
        ],
        [weight, shape, k],
    )
    converted, _ = convert_to_fp16(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    )
    path = tmp_path / "ties16.onnx"
    onnx.save(converted, str(path))
    x = np.array([1000.1, 1000.3, 1000.2, 999.0], np.float32).reshape(1, 1, 1, 4)
    index, activation = cpu_session(path, emulate_low_precision=True).run(None, {"x": x})
    assert index.tolist() == [[1, 2, 0, 3]]  # fp16 would give [1, 0, 2, 3] (1000, 1000.5, 1000, 999)
    assert activation.ravel().tolist() == [1000.0, 1000.5, 1000.0, 999.0]  # the Relu did run in fp16


def test_integer_count_cast_for_an_fp32_op_is_not_rounded_to_fp16(tmp_path):
    """An integer count cast to float for a kept op (a mask area dividing a sum, as in Mask2Former):
    70000 is past fp16's range, so an fp16 cast would make it inf and the quotient 0."""
    nodes = [
        helper.make_node("Cast", ["count"], ["count_float"], to=TensorProto.FLOAT, name="to_float"),
        helper.make_node("Div", ["x", "count_float"], ["mean"], name="div"),
    ]
    graph = helper.make_graph(
        nodes,
        "count",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("count", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    converted, _ = convert_to_fp16(model)
    assert not round_trips(converted.graph)
    path = tmp_path / "count16.onnx"
    onnx.save(converted, str(path))
    feeds = {"x": np.array([7000.0], np.float32), "count": np.array([70000], np.int64)}
    (mean,) = cpu_session(path, emulate_low_precision=True).run(None, feeds)
    assert mean.tolist() == [np.float32(0.1)]


class NormNet(torch.nn.Module):
    """A conv followed by LayerNorm and Softmax: the conv goes fp16, the fragile ops stay fp32."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1)
        return torch.softmax(self.norm(y), dim=-1)


def test_conversion_keeps_io_fp32_and_fragile_ops_fp32(tmp_path):
    path = tmp_path / "norm.onnx"
    torch.onnx.export(NormNet().eval(), (torch.rand(1, 3, 8, 8),), str(path), dynamo=False, opset_version=18,
                      input_names=["images"], output_names=["out"])  # fmt: skip
    converted, report = convert_to_fp16(onnx.load(str(path)))
    onnx.checker.check_model(converted, full_check=True)
    types = value_types(converted)
    nodes = {node.op_type: node for node in converted.graph.node}
    assert types[converted.graph.input[0].name] == TensorProto.FLOAT  # casts at the boundary
    assert types[converted.graph.output[0].name] == TensorProto.FLOAT
    assert types[nodes["Conv"].input[1]] == TensorProto.FLOAT16  # conv weights in fp16
    assert types[nodes["Conv"].output[0]] == TensorProto.FLOAT16
    assert types[nodes["LayerNormalization"].output[0]] == TensorProto.FLOAT
    assert types[nodes["Softmax"].output[0]] == TensorProto.FLOAT
    assert report.kept_fp32.get("LayerNormalization") == 1 and report.kept_fp32.get("Softmax") == 1
    assert report.fp16_nodes >= 2 and report.casts_added >= 2
    # Without the keep-list, the same ops would be fp16.
    bare, _ = convert_to_fp16(onnx.load(str(path)), keep_ops=())
    softmax = next(node for node in bare.graph.node if node.op_type == "Softmax")
    assert value_types(bare)[softmax.output[0]] == TensorProto.FLOAT16


@pytest.mark.slow
def test_fp16_semantic_graph_numerics_on_onnxruntime_cpu(shared_graph):
    options = {"width": 0.0625, "num_classes": 5}  # tests/export/test_onnx_export.py's: a shared graph
    model = build_model("fcn8s", options=options)
    fp32, fp16 = shared_graph("fcn8s", options), shared_graph("fcn8s", options, precision="fp16")
    assert fp16.precision == "fp16" and fp16.fp16["fp16_nodes"] > 0 and all(r.passed for r in fp16.parity)
    initializer_types = {init.data_type for init in onnx.load(str(fp16.path)).graph.initializer}
    assert TensorProto.FLOAT16 in initializer_types
    x = parity_inputs(model, 2, 64, 96, seed=3)
    (want,), (got,) = run(fp32.path, x), run(fp16.path, x)
    assert got.dtype == np.float32 and got.shape == want.shape
    error = np.abs(got - want).max()
    # fp16 rounding is visible but small, and the label map barely moves.
    assert 0 < error < 0.05 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.99
    assert check_tensorrt_readiness(fp16.path).ready


@pytest.mark.slow
def test_fp16_detector_keeps_box_arithmetic_fp32(tmp_path):
    model = build_model("mask_rcnn", "trained")  # trained: confident detections, not near-tied noise
    path = export_onnx(model, tmp_path / "m.onnx", exporter="torchscript")
    graph = onnx.load(str(path))
    kept = box_arithmetic_nodes(graph.graph)
    by_name = {node.name: node for node in graph.graph.node}
    assert kept and {by_name[name].op_type for name in kept} >= {"Exp", "Clip", "TopK"}  # box decoding
    # The heads' last layers (RPN objectness and deltas per level, the box predictor), nothing deeper.
    heavy = {name for name in kept if by_name[name].op_type in HEAVY_OPS}
    assert len(heavy) == 12 and all(("cls_" in name or "bbox_pred" in name) for name in heavy)
    converted, report = convert_to_fp16(graph)
    types = value_types(converted)
    producer = {out: node for node in converted.graph.node for out in node.output}
    assert report.kept_fp32["Conv"] == 10 and report.kept_fp32["Gemm"] == 2
    assert not round_trips(converted.graph)
    for node in converted.graph.node:
        if node.op_type in ("NonMaxSuppression", "RoiAlign", "TopK"):
            assert all(types.get(name, TensorProto.FLOAT) != TensorProto.FLOAT16 for name in node.input)
        if node.op_type == "RoiAlign":  # the FPN maps it pools stay fp16 (cast up in front of it)
            feature = producer[node.input[0]]
            assert feature.op_type == "Cast" and types[feature.input[0]] == TensorProto.FLOAT16
    fp16_path = tmp_path / "m16.onnx"
    onnx.save(converted, str(fp16_path))
    x = parity_inputs(model, 2, 96, 128, seed=1)
    names = list(model.output_names)
    want = dict(zip(names, run(path, x), strict=True))
    emulated = cpu_session(fp16_path, emulate_low_precision=True)  # fp16 activations rounded, as on a GPU
    got = dict(zip(names, emulated.run(None, {"images": x}), strict=True))
    agreement, worst_box_error = detection_agreement(want, got)
    assert agreement >= 0.95 and worst_box_error < 1.0
    assert check_tensorrt_readiness(fp16_path).ready
    # The one precision rule (onnxruntime's emulation, TensorRT's artifact check, onnx: models) calls the
    # converted graph fp16 despite its fp32 keep-list, and the exported one fp32.
    assert graph_precision(converted) == "fp16" and graph_precision(graph) == "fp32"


def test_fp16_overflow_is_caught_by_parity(tmp_path):
    """A network whose activations pass fp16's range (65504) fails the fp16 parity check."""

    class Overflow(torch.nn.Module):
        task, input_names, output_names = "semantic", ["images"], ["logits"]
        size_divisor, dynamic_spatial, preferred_exporter, num_classes = 1, True, "torchscript", 2

        def __init__(self):
            super().__init__()
            self.options = {"scale": 1e5}
            self.conv = torch.nn.Conv2d(3, 2, 1)
            with torch.no_grad():
                self.conv.weight.fill_(1e5)

        def preprocess(self, images):
            return {"images": images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0}

        def forward(self, x):
            return self.conv(x)

    model = Overflow().eval()
    assert all(r.passed for r in cached_export(model, "overflow", ExportRequest(), tmp_path).parity)
    with pytest.raises(ExportError, match="fp16 ONNX parity failed"):
        cached_export(model, "overflow", ExportRequest(precision="fp16"), tmp_path)


def test_fp16_parity_sees_an_overflow_inside_the_graph(tmp_path):
    """An activation past fp16's range that a later op brings back: onnxruntime's CPU provider alone
    would compute the fp16 region in fp32 and miss it; the emulated run (every fp16 tensor rounded after
    its producer) does not."""
    from segbench.export.onnx import PARITY_TOLERANCES, check_parity

    class Hidden(torch.nn.Module):
        task, input_names, output_names = "semantic", ["images"], ["logits"]
        size_divisor, dynamic_spatial, preferred_exporter, num_classes = 1, True, "torchscript", 2

        def __init__(self):
            super().__init__()
            self.options = {"hidden": True}
            self.conv = torch.nn.Conv2d(3, 2, 1)
            with torch.no_grad():
                self.conv.weight.fill_(5e3)  # stored exactly in fp16; the sum over 3 channels is not

        def preprocess(self, images):
            return {"images": (images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0) * 10}

        def forward(self, x):
            return torch.relu(self.conv(x)) * 1e-3

    model = Hidden().eval()
    fp32 = cached_export(model, "hidden", ExportRequest(), tmp_path)
    converted, _ = convert_to_fp16(onnx.load(str(fp32.path)), keep_ops=())
    path = tmp_path / "hidden16.onnx"
    onnx.save(converted, str(path))
    shapes = [(1, 32, 32)]
    plain = check_parity(model, path, shapes, tolerance=PARITY_TOLERANCES["fp16"])
    emulated = check_parity(
        model, path, shapes, tolerance=PARITY_TOLERANCES["fp16"], emulate_low_precision=True
    )
    assert plain[0].passed  # the CPU provider's fp32 compute hides the overflow
    assert not emulated[0].passed
