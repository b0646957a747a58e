import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from segbench.export.onnx import (
    ExportError,
    check_parity,
    export_and_verify,
    export_onnx,
    parity_failure,
    quiet_exporter_logs,
)
from segbench.models import build_model
from segbench.models.base import SegmentationModel

SMALL = {
    "fcn32s": {"width": 0.0625, "num_classes": 5},
    "fcn16s": {"width": 0.0625, "num_classes": 5},
    "fcn8s": {"width": 0.0625, "num_classes": 5},
    "unet": {"base_channels": 4, "num_classes": 5},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_parity_per_model(name, shared_graph):
    # The cached export is export_and_verify's; tests/export/test_tensorrt_readiness.py reuses the graphs.
    export = shared_graph(name, SMALL[name])
    for report in export.parity:
        print(
            f"{name} {report.shape}: max abs {report.max_abs_err:.2e}, argmax {report.argmax_agreement:.4f}"
        )
        assert report.passed
        assert report.max_abs_err < 1e-4
        assert report.argmax_agreement >= 0.999
    # Parity ran at batch 1 and 3, neither of which is the traced batch of 2.
    assert {r.shape[0] for r in export.parity} == {1, 3}


@pytest.mark.slow
def test_graph_has_dynamic_batch_height_width(shared_graph):
    path = shared_graph("fcn8s", SMALL["fcn8s"]).path
    graph = onnx.load(str(path)).graph
    for value in (graph.input[0], graph.output[0]):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims[0] == "batch" and dims[2] == "height" and dims[3] == "width"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"images": np.zeros((4, 3, 50, 70), np.float32)})
    assert out.shape == (4, 5, 50, 70)


def test_torchscript_exporter_also_passes_parity(tmp_path):
    model = build_model("unet", options=SMALL["unet"])
    export = export_and_verify(model, tmp_path / "u.onnx", exporter="torchscript", opset=17)
    assert export.exporter == "torchscript" and all(r.passed for r in export.parity)
    assert onnx.load(str(export.path)).opset_import[0].version == 17


class BakedShape(SegmentationModel):
    """Flattens with the traced spatial size written in as a constant: exports, but is wrong elsewhere."""

    def __init__(self):
        super().__init__(num_classes=2)
        self.conv = torch.nn.Conv2d(3, 2, 1)

    def forward(self, images):
        x = self.conv(images)
        pooled = x.mean(dim=(2, 3), keepdim=True)
        # int() freezes the traced height into the graph.
        return x - pooled + int(images.shape[2]) * 1e-2


def test_parity_catches_a_baked_in_shape(tmp_path):
    model = BakedShape().eval()
    path = export_onnx(model, tmp_path / "baked.onnx", exporter="torchscript")
    reports = check_parity(model, path, [(1, 40, 40)])
    assert not reports[0].passed
    with pytest.raises(ExportError, match="parity failed"):
        export_and_verify(model, tmp_path / "baked2.onnx", exporter="torchscript")


class Unexportable(SegmentationModel):
    def __init__(self):
        super().__init__(num_classes=2)

    def forward(self, images):
        raise RuntimeError("this op has no ONNX symbolic")


def test_failed_export_leaves_no_file(tmp_path):
    with pytest.raises(ExportError, match=r"export failed: .*no ONNX symbolic"):
        export_onnx(Unexportable().eval(), tmp_path / "x.onnx", exporter="torchscript")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_static_size_export_fixes_height_and_width(tmp_path):
    model = build_model("unet", options=SMALL["unet"])
    export = export_and_verify(model, tmp_path / "static.onnx", static_size=(48, 80))
    assert [r.shape for r in export.parity] == [(1, 3, 48, 80), (3, 3, 48, 80)]
    graph = onnx.load(str(export.path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 48, 80]
    session = ort.InferenceSession(str(export.path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": np.zeros((2, 3, 48, 80), np.float32)})[0].shape == (2, 5, 48, 80)
    # Another size is refused loudly instead of computed wrongly.
    with pytest.raises(Exception, match="dimensions"):
        session.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})


@pytest.mark.slow
def test_parity_fails_a_graph_that_cannot_run_at_a_shape(tmp_path):
    model = build_model("unet", options=SMALL["unet"])
    path = export_onnx(model, tmp_path / "static.onnx", static_size=(32, 32))
    (report,) = check_parity(model, path, [(1, 64, 64)])
    assert not report.passed and report.max_abs_err == float("inf")
    # The failure says why, instead of an "inf" error that looks like a numeric blow-up.
    assert report.error.startswith("onnxruntime cannot run the graph: ") and not report.checks
    assert parity_failure([report], "fp32").startswith("fp32 ONNX parity failed at input 1x3x64x64: onnxrun")


def test_exporter_chatter_is_dropped_but_its_errors_are_kept(caplog, capsys):
    # What reaches the user, through whichever handler: onnxscript's logger has none (its records reach the
    # root's, or Python's last-resort stderr one); torch's has its own stderr handler and may or may not
    # propagate (pytest's capture sees it differently across versions). Check what arrives, not the route.
    folding = logging.getLogger("onnxscript.optimizer._constant_folding")
    core = logging.getLogger("torch.onnx._internal.exporter._core")
    with quiet_exporter_logs():
        folding.warning("Skipping constant folding for op Split with multiple outputs.")
        core.warning("Skipping constant argument x")
        folding.error("onnxscript went wrong")
        core.error("torch.onnx went wrong")
    reached = [r.getMessage() for r in caplog.records] + capsys.readouterr().err.splitlines()
    assert not any("Skipping" in text for text in reached), reached
    for error in ("onnxscript went wrong", "torch.onnx went wrong"):
        assert any(text.endswith(error) for text in reached), (error, reached)
    # Only during the block: the levels are restored afterwards.
    folding.warning("after the export")
    assert [r.getMessage() for r in caplog.records][-1] == "after the export"
    assert logging.getLogger("onnxscript").level == logging.getLogger("torch.onnx").level == logging.NOTSET


def test_a_logger_level_the_user_set_is_left_alone(caplog):
    logging.getLogger("onnxscript").setLevel(logging.INFO)
    try:
        with quiet_exporter_logs():
            logging.getLogger("onnxscript.optimizer").info("the user asked for this")
        assert [r.getMessage() for r in caplog.records] == ["the user asked for this"]
        assert logging.getLogger("onnxscript").level == logging.INFO
    finally:
        logging.getLogger("onnxscript").setLevel(logging.NOTSET)


def test_detection_agreement_ignores_row_order_but_not_lost_detections():
    from segbench.metrics.tensors import detection_agreement

    expected = {
        "boxes": np.array([[[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]]], np.float32),
        "scores": np.array([[0.900, 0.899, 0.1]], np.float32),
        "labels": np.array([[1, 2, 1]]),
        "num_detections": np.array([3]),
    }
    # Two near-tied detections in swapped rows, a low-score one dropped: still the same detections.
    swapped = {
        "boxes": expected["boxes"][:, [1, 0, 2]],
        "scores": np.array([[0.899, 0.9, 0.0]], np.float32),
        "labels": expected["labels"][:, [1, 0, 2]],
        "num_detections": np.array([2]),
    }
    assert detection_agreement(expected, swapped) == (1.0, 0.0)
    lost = {**swapped, "num_detections": np.array([1])}
    assert detection_agreement(expected, lost)[0] == 0.5
    relabelled = {**swapped, "labels": np.array([[2, 2, 1]])}
    assert detection_agreement(expected, relabelled)[0] == 0.5
