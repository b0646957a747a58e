"""fp16 ONNX graphs: what is converted, what is kept in fp32, and their numerics on onnxruntime CPU."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from segbench.export.artifacts import ExportRequest, cached_export
from segbench.export.fp16 import box_arithmetic_nodes, convert_to_fp16
from segbench.export.onnx import ExportError, export_onnx, parity_inputs
from segbench.export.tensorrt_readiness import check_tensorrt_readiness
from segbench.metrics.tensors import detection_agreement
from segbench.models import build_model


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    infos = list(graph.value_info) + list(graph.input) + list(graph.output)
    types = {info.name: info.type.tensor_type.elem_type for info in infos}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


def run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})


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


def test_fp16_semantic_graph_numerics_on_onnxruntime_cpu(tmp_path):
    model = build_model("fcn8s", options={"width": 0.0625, "num_classes": 5})
    fp32 = cached_export(model, "fcn8s", ExportRequest(), tmp_path)
    fp16 = cached_export(model, "fcn8s", ExportRequest(precision="fp16"), tmp_path)
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


def test_fp16_detector_keeps_box_arithmetic_fp32(tmp_path):
    model = build_model("mask_rcnn", "trained")  # trained: confident detections, not near-tied noise
    path = export_onnx(model, tmp_path / "m.onnx", exporter="torchscript")
    graph = onnx.load(str(path))
    kept = box_arithmetic_nodes(graph.graph)
    by_name = {node.name: node for node in graph.graph.node}
    assert kept and {by_name[name].op_type for name in kept} >= {"Exp", "Clip"}  # box decoding
    assert not any(by_name[name].op_type in ("Conv", "Gemm", "MatMul") for name in kept)
    converted, _ = convert_to_fp16(graph)
    types = value_types(converted)
    for node in converted.graph.node:
        if node.op_type in ("NonMaxSuppression", "RoiAlign"):
            assert all(types.get(name, TensorProto.FLOAT) != TensorProto.FLOAT16 for name in node.input)
    fp16_path = tmp_path / "m16.onnx"
    onnx.save(converted, str(fp16_path))
    x = parity_inputs(model, 2, 96, 128, seed=1)
    names = list(model.output_names)
    want, got = (dict(zip(names, run(p, x), strict=True)) for p in (path, fp16_path))
    agreement, worst_box_error = detection_agreement(want, got)
    assert agreement >= 0.95 and worst_box_error < 1.0
    assert check_tensorrt_readiness(fp16_path).ready


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
