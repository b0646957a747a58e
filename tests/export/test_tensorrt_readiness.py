import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segbench.backends.onnxruntime_backend import OnnxRuntimeConfig, splitting_ops
from segbench.cli import main
from segbench.export.fp16 import convert_to_fp16
from segbench.export.tensorrt_readiness import check_tensorrt_readiness
from segbench.models import build_model
from segbench.models.registry import get_spec

SMALL = {
    "fcn32s": {"width": 0.0625, "num_classes": 5},
    "fcn16s": {"width": 0.0625, "num_classes": 5},
    "fcn8s": {"width": 0.0625, "num_classes": 5},
    "unet": {"base_channels": 4, "num_classes": 5},
    "mask_rcnn": {"num_classes": 4, "backbone": "resnet10", "fpn_channels": 32, "representation_size": 64,
                  "mask_channels": 32, "max_detections": 10},
    "mask2former": {"num_classes": 6, "backbone": "resnet-tiny", "num_queries": 6, "hidden_dim": 32,
                    "encoder_layers": 1, "decoder_layers": 2},
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_model_graph_is_ready(name, tmp_path, shared_graph):
    static = None if build_model(name, options=SMALL[name]).dynamic_spatial else (64, 64)
    exporter = "torchscript" if static else None  # same graph, faster to trace
    # The semantic models' graphs are tests/export/test_onnx_export.py's, from the shared cache.
    path = shared_graph(name, SMALL[name], exporter=exporter, static_size=static).path
    report = check_tensorrt_readiness(path)
    assert report.ready, [f for f in report.findings if f.severity == "error"]
    # What the registry declares before export (a dry run's TensorRT-provider notes read it) is what the
    # export holds: the ops the provider leaves off TensorRT by default; the rest TensorRT takes.
    assert splitting_ops(report.op_counts, OnnxRuntimeConfig(device="cuda", tensorrt=True)) == sorted(
        get_spec(name).data_dependent_ops
    )
    # The only duty left for the engine build: a profile for the dynamic input dims.
    assert {f.where for f in report.findings if f.severity != "info"} == {"images"}
    # The fp16 graph (what TensorRT 11 builds from) is ready too, and a profile covering the input
    # leaves no duty at all.
    converted, _ = convert_to_fp16(onnx.load(str(path)))
    fp16_path = tmp_path / f"{name}-fp16.onnx"
    onnx.save(converted, str(fp16_path))
    size = static or (64, 96)
    profile = {"images": ((1, 3, *size), (4, 3, *size))}
    fp16_report = check_tensorrt_readiness(fp16_path, profile)
    assert fp16_report.ready and all(f.severity == "info" for f in fp16_report.findings), fp16_report.findings
    assert fp16_report.op_counts["Cast"] > report.op_counts.get("Cast", 0)


def graph_file(tmp_path, nodes, inputs, outputs, initializers=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    return path


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])


def errors(path):
    return [f.message for f in check_tensorrt_readiness(path).findings if f.severity == "error"]


def test_unsupported_op_is_an_error(tmp_path):
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    path = graph_file(tmp_path, [helper.make_node("Unique", ["x"], ["y"])], [X], [y])
    assert errors(path) == ["Unique is not supported by TensorRT 10.1's ONNX parser"]


@pytest.mark.parametrize(
    ("k", "attrs", "message"),
    [(5, {"sorted": 0}, "TopK must be sorted (sorted=1)"), (5000, {}, "TopK K=5000 must be below 3840")],
)
def test_topk_restrictions(tmp_path, k, attrs, message):
    values = helper.make_tensor_value_info("v", TensorProto.FLOAT, None)
    indices = helper.make_tensor_value_info("i", TensorProto.INT64, None)
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], **attrs)
    k_tensor = numpy_helper.from_array(np.array([k], np.int64), "k")
    assert errors(graph_file(tmp_path, [node], [X], [values, indices], [k_tensor])) == [message]


def test_scatternd_reduction_resize_mode_and_custom_ops(tmp_path):
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("ScatterND", ["x", "idx", "upd"], ["s"], reduction="add"),
        helper.make_node("Resize", ["s", "", "scales"], ["r"], mode="cubic"),
        helper.make_node("EfficientNMS_TRT", ["r"], ["y"], domain="trt.plugins"),
    ]
    inits = [
        numpy_helper.from_array(np.zeros((1, 1), np.int64), "idx"),
        numpy_helper.from_array(np.zeros((1, 8), np.float32), "upd"),
        numpy_helper.from_array(np.ones(2, np.float32), "scales"),
    ]
    found = errors(graph_file(tmp_path, nodes, [X], [y], inits))
    assert found == [
        "ScatterND with a reduction is not supported",
        "Resize mode 'cubic': only nearest and linear",
        "trt.plugins::EfficientNMS_TRT is a custom op: TensorRT needs a plugin for it",
    ]


def test_double_inputs_data_dependent_outputs_and_new_opsets(tmp_path):
    x64 = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [2, "n"])
    path = graph_file(tmp_path, [helper.make_node("NonZero", ["x"], ["y"])], [x64], [y], opset=21)
    report = check_tensorrt_readiness(path)
    messages = {f.severity + ": " + f.message for f in report.findings}
    assert "error: opset 21 is above 20, the newest TensorRT 10.1 parses" in messages
    assert (
        "warning: output size not known statically: if data-dependent, the engine needs an output allocator"
        in messages
    )
    assert "warning: double tensor: TensorRT casts it to float, clamping to +-FLT_MAX" in messages


def test_cli_exit_codes(tmp_path, capsys):
    ready = graph_file(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [X], [X_out()])
    assert main(["trtcheck", str(ready)]) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    not_ready = graph_file(bad, [helper.make_node("Unique", ["x"], ["y"])], [X], [y])
    assert main(["trtcheck", str(not_ready)]) == 1
    assert "not ready" in " ".join(capsys.readouterr().out.split())  # the console wraps long paths
    assert main(["trtcheck", str(tmp_path / "missing.onnx")]) == 2
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    assert main(["trtcheck", str(tmp_path / "junk.onnx")]) == 2
    assert "cannot read" in capsys.readouterr().err


def X_out():
    return helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])


def test_profile_must_cover_dynamic_inputs_and_match_static_dims(tmp_path):
    dynamic = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    path = graph_file(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [dynamic], [y])
    assert [f.severity for f in check_tensorrt_readiness(path).findings] == ["warning"]
    covered = check_tensorrt_readiness(path, {"x": ((1, 8), (4, 8))})
    assert covered.ready and [f.severity for f in covered.findings] == ["info"]
    assert errors(path) == []
    wrong_static = check_tensorrt_readiness(path, {"x": ((1, 4), (4, 4))})
    assert not wrong_static.ready and "conflicts with static dim 1 = 8" in wrong_static.findings[0].message
    other_input = check_tensorrt_readiness(path, {"z": ((1, 8), (4, 8))})
    assert not other_input.ready and "not covered by any profile" in other_input.findings[0].message
    wrong_rank = check_tensorrt_readiness(path, {"x": ((1, 8, 1), (4, 8, 1))})
    assert not wrong_rank.ready and "rank 2" in wrong_rank.findings[0].message


def test_int64_inputs_and_outputs_are_noted_not_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [4])
    report = check_tensorrt_readiness(graph_file(tmp_path, [helper.make_node("Neg", ["x"], ["y"])], [x], [y]))
    assert report.ready and [(f.severity, f.where) for f in report.findings] == [("info", "x, y")]


def test_maxpool_with_an_indices_output_is_not_ready(tmp_path):
    image = helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 8, 8])
    pooled = helper.make_tensor_value_info("p", TensorProto.FLOAT, None)
    indices = helper.make_tensor_value_info("i", TensorProto.INT64, None)
    with_indices = helper.make_node("MaxPool", ["img"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2])
    assert errors(graph_file(tmp_path, [with_indices], [image], [pooled, indices])) == [
        "MaxPool with an Indices output is not supported"
    ]
    plain = helper.make_node("MaxPool", ["img"], ["p"], kernel_shape=[2, 2], strides=[2, 2])
    assert errors(graph_file(tmp_path, [plain], [image], [pooled])) == []
