"""The model families from smp and torchvision, and SegNet: shapes, library equivalence, export parity at
batch 2 and two sizes, TensorRT readiness, and SegNet's pooling indices through ONNX."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
import torch

from segbench.errors import WeightsError
from segbench.export.onnx import export_and_verify, verify_parity
from segbench.export.tensorrt_readiness import check_tensorrt_readiness
from segbench.models import build_model, model_stats
from segbench.models.registry import weights_path
from segbench.models.segnet import unpool_by_argmax

HAS_SMP = importlib.util.find_spec("segmentation_models_pytorch") is not None
needs_smp = pytest.mark.skipif(
    not HAS_SMP, reason="segmentation-models-pytorch (segbench[zoo]) not installed"
)

# Reduced encoders and widths where the option exists: each export takes seconds, not minutes.
SMALL_SMP = {
    "unet_resnet34": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8]},
    "linknet_resnet34": {"encoder": "resnet18", "encoder_depth": 3},
    "deeplabv3plus_resnet50": {
        "encoder": "resnet18",
        "decoder_channels": 32,
        "decoder_atrous_rates": [2, 4, 6],
    },
    "pspnet_resnet50": {"encoder": "resnet18", "psp_out_channels": 32},
    "unetplusplus_resnet34": {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": [32, 16, 8]},
}
SMALL_OTHER = {
    "deeplabv3_resnet50": {"backbone": "mobilenet_v3_large"},
    "fcn_resnet50": {},  # torchvision offers ResNet-50/101 bodies only
    "lraspp_mobilenet_v3_large": {},
    "segnet": {"width": 0.125},
    "segnet-argmax": {"width": 0.125, "unpool": "argmax"},
}
SMALL = {**SMALL_SMP, **SMALL_OTHER}
PARAMS = [pytest.param(name, marks=needs_smp) for name in SMALL_SMP] + list(SMALL_OTHER)
# The brief's parity shapes: batch 2 (the traced batch) at two sizes, one off every divisor.
PARITY_SHAPES = [(2, 64, 64), (2, 72, 104)]


def small(name: str, **extra) -> torch.nn.Module:
    return build_model(name.split("-")[0], options={**SMALL[name], "num_classes": 5, **extra})


@pytest.mark.parametrize("name", PARAMS)
def test_logits_keep_the_input_size(name):
    model = small(name)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 37, 75))
    assert logits.shape == (2, 5, 37, 75) and torch.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", PARAMS)
def test_export_parity_at_batch_2_and_two_sizes_and_readiness(name, tmp_path):
    model = small(name)
    path = tmp_path / f"{name}.onnx"
    if model.dynamic_spatial:
        # export_and_verify checks batches 1 and 3 at sizes off the divisor; then batch 2 at two more.
        export_and_verify(model, path)
        reports = verify_parity(model, path, PARITY_SHAPES)
        graphs = [path]
    else:
        # PSPNet: one graph per size, each checked at batches 1 and 3 by export_and_verify and at 2 here.
        graphs, reports = [], []
        for _, height, width in PARITY_SHAPES:
            graph = tmp_path / f"{name}-{height}x{width}.onnx"
            export_and_verify(model, graph, static_size=(height, width))
            reports += verify_parity(model, graph, [(2, height, width)])
            graphs.append(graph)
    assert [r.shape[0] for r in reports] == [2, 2] and all(r.passed for r in reports)
    for graph in graphs:
        # segbench trtcheck's verdict: SegNet's index form keeps MaxPool's Indices output, which TensorRT's
        # parser refuses; its argmax deploy form and every other family are ready.
        report = check_tensorrt_readiness(graph)
        if name == "segnet":
            errors = {f.message for f in report.findings if f.severity == "error"}
            assert errors == {"MaxPool with an Indices output is not supported"}
        else:
            assert report.ready
    if name.startswith("segnet"):
        check_segnet_graph(name, onnx.load(str(path)).graph)


@pytest.mark.slow
@needs_smp
def test_pspnet_graph_traced_at_one_size_fails_at_another(tmp_path):
    # Why PSPNet is exported per size: its adaptive pooling bakes the traced map's window bounds.
    model = small("pspnet_resnet50")
    assert not model.dynamic_spatial
    from segbench.export.onnx import export_onnx

    path = export_onnx(model, tmp_path / "psp.onnx")  # dynamic axes declared, traced at 96x128
    reports = verify_parity(model, path, [(2, 64, 64)], enforce=False)
    assert not reports[0].passed


def check_segnet_graph(name: str, graph: onnx.GraphProto) -> None:
    nodes = graph.node
    if name == "segnet":
        # The dynamo exporter writes max_pool2d's indices as MaxPool's Indices output (a kernel-1 MaxPool
        # turns ONNX's N*C*H*W offsets into PyTorch's per-plane ones) and max_unpool2d as ScatterND.
        windows = [n for n in nodes if n.op_type == "MaxPool" and list(n.attribute[-1].ints) == [2, 2]]
        assert len(windows) == 5 and all(len(n.output) == 2 and n.output[1] for n in windows)
        assert sum(n.op_type == "ScatterND" for n in nodes) == 5
    else:
        # TensorRT's parser rejects MaxPool's Indices output (segbench trtcheck does not look at it):
        # the argmax form has neither indices nor scatters.
        assert all(len([o for o in n.output if o]) == 1 for n in nodes if n.op_type == "MaxPool")
        assert sum(n.op_type == "ArgMax" for n in nodes) == 5
        assert not any(n.op_type in ("ScatterND", "MaxUnpool") for n in nodes)


def test_onnx_maxunpool_round_trips_pytorch_indices_and_trtcheck_flags_it(tmp_path):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    # ONNX's own pair, MaxPool with Indices + MaxUnpool, as a hand-written graph (the exporters write
    # ScatterND instead): onnxruntime reproduces PyTorch's unpooling, and trtcheck refuses MaxUnpool.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("MaxPool", ["x"], ["pooled", "indices"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxUnpool", ["pooled", "indices"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "unpool", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8,
    )
    path = tmp_path / "maxunpool.onnx"
    onnx.save(model, str(path))
    sample = torch.randn(2, 4, 8, 12)
    sample[:, :, :4] = 0  # ties: the first maximum wins in both
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": sample.numpy()}
    )[0]
    pooled, indices = torch.nn.functional.max_pool2d(sample, 2, 2, return_indices=True)
    assert np.array_equal(got, torch.nn.functional.max_unpool2d(pooled, indices, 2, 2).numpy())
    report = check_tensorrt_readiness(path)
    assert not report.ready
    assert any(f.severity == "error" and "MaxUnpool" in f.message for f in report.findings)


def test_segnet_argmax_unpooling_equals_index_unpooling():
    indices, argmax = small("segnet"), small("segnet-argmax")
    argmax.load_state_dict(indices.state_dict())  # the option changes the forward, not the weights
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(indices(x), argmax(x))
    features = torch.randint(0, 3, (2, 4, 8, 10)).float()  # many ties
    values, where = torch.nn.functional.max_pool2d(features, 2, 2, return_indices=True)
    expected = torch.nn.functional.max_unpool2d(values * 2 + 1, where, 2, 2)
    assert torch.equal(unpool_by_argmax(values * 2 + 1, features), expected)


def test_segnet_encoder_is_torchvision_vgg16_bn():
    from torchvision.models import vgg16_bn

    with torch.device("meta"):
        model = build_model("segnet")
        reference = vgg16_bn().features
    assert {k: v.shape for k, v in model.encoder.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


@needs_smp
def test_smp_state_dicts_are_interchangeable():
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    reference = smp.Unet(
        "resnet18", encoder_depth=3, encoder_weights=None, decoder_channels=[32, 16, 8], classes=5
    )
    model = small("unet_resnet34")
    # smp keeps ResNet stages beyond encoder_depth that it never runs; segbench drops them.
    state = reference.state_dict()
    unused = {k for k in state if k.startswith(("encoder.layer3.", "encoder.layer4."))}
    assert unused and set(state) - unused == set(model.state_dict())
    model.load_state_dict({k: v for k, v in state.items() if k not in unused})
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), reference.eval()(x))


def test_torchvision_forward_is_torchvisions():
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    reference = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5).eval()
    model = small("lraspp_mobilenet_v3_large")
    model.load_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x)["out"])


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "fcn_resnet50", "lraspp_mobilenet_v3_large"])
def test_torchvision_coco_weights_are_read_from_the_hub_cache_only(name, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    options = {} if name.startswith("lraspp") else {"aux_loss": True}
    with pytest.raises(WeightsError, match="torch hub cache"):
        weights_path(name, "coco", options)
    if not name.startswith("lraspp"):
        with pytest.raises(WeightsError, match="aux_loss"):
            weights_path(name, "coco", {})


@pytest.mark.parametrize(
    ("name", "params_m"),
    # torchvision's documented sizes (without the auxiliary head) and smp's / the paper's.
    [
        ("deeplabv3_resnet50", 39.6),
        ("fcn_resnet50", 33.0),
        ("lraspp_mobilenet_v3_large", 3.2),
        ("segnet", 29.4),
        pytest.param("unet_resnet34", 24.4, marks=needs_smp),
        pytest.param("pspnet_resnet50", 2.3, marks=needs_smp),  # smp's: ResNet-50 up to layer2 only
    ],
)
def test_full_architectures_are_counted(name, params_m):
    stats = model_stats(name, height=512, width=512)
    assert stats["params"] / 1e6 == pytest.approx(params_m, abs=0.1)
    assert stats["gflops"] > 1


@needs_smp
@pytest.mark.parametrize("name", ["unet_resnet34", "linknet_resnet34"])
def test_trained_checkpoints_are_small_and_record_their_miou(name):
    from segbench.models.weights import checkpoint_metadata

    path = weights_path(name, "trained")
    assert path.stat().st_size < 5e6
    metadata = checkpoint_metadata(path)
    assert metadata["val_miou"] > 0.5
    model = build_model(name, "trained")
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 6, 64, 64)
