"""Mask R-CNN: the static-shape deploy graph against torchvision's own MaskRCNN, its ONNX export, mask
pasting, checkpoint compatibility and option checks.

The network is a ResNet-18 FPN with 4 classes and fewer RPN proposals than the default (the box and mask
heads dominate CPU time), on images of at most 128x160, so the whole file stays well under a minute.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.roi_heads import paste_masks_in_image

from segbench.export.onnx import TRACE_BATCH, export_onnx
from segbench.models.mask_rcnn import MaskRCNN, mask_rcnn
from segbench.models.mask_rcnn_ops import paste_masks

NUM_CLASSES = 4
MAX_DETECTIONS = 10
MASK_SIZE = 28
CASES = {"batch1_128x160": (1, 128, 160), "batch2_96x96": (2, 96, 96)}
# Size the exporter traces at (3x4 times the size divisor), and untraced sizes, one not a multiple of 32.
TRACED = (TRACE_BATCH, 96, 128)
ONNX_SHAPES = {"traced": TRACED, "batch1_128x160": (1, 128, 160), "batch3_72x100": (3, 72, 100)}


def _small_model() -> MaskRCNN:
    torch.manual_seed(0)
    body = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    detector = TorchvisionMaskRCNN(
        body,
        num_classes=NUM_CLASSES,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=100,
        box_detections_per_img=MAX_DETECTIONS,
    )
    model = MaskRCNN(detector).eval()
    # Random class weights give every class nearly the same score for every box, and near-ties make NMS
    # tie-breaking, not the implementation, decide what survives. Zero-mean weights (the box features
    # are post-ReLU, so a common mode would favour one class) with a strong background bias spread the
    # scores over (0, 1), mix the labels and leave some images with fewer than MAX_DETECTIONS boxes.
    weight = torch.randn(NUM_CLASSES, 1024, generator=torch.Generator().manual_seed(5))
    weight -= weight.mean(dim=1, keepdim=True)
    classifier = model.roi_heads.box_predictor.cls_score
    with torch.no_grad():
        classifier.weight.copy_(0.2 * weight)
        classifier.bias.copy_(torch.tensor([7.0, 0.0, 0.0, 0.0]))
    return model


def _images(model: MaskRCNN, batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8)
    return torch.from_numpy(model.preprocess(pixels)["images"])


def _deploy(model: MaskRCNN, images: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {name: t.numpy() for name, t in zip(model.output_names, model(images), strict=True)}


def _tie_free_prefix(scores: np.ndarray, gap: float) -> int:
    """Number of leading detections (scores sorted descending) that no near-tie can reorder.

    The prefix stops before the first pair of neighbours closer than ``gap``; a list cut at
    MAX_DETECTIONS loses its last entry too, as it may tie with the first one cut off. Implementations
    whose scores agree within gap/2 rank this prefix identically, so it can be compared row by row.
    """
    for i in range(1, len(scores)):
        if scores[i - 1] - scores[i] <= gap:
            return i - 1
    return len(scores) - 1 if len(scores) == MAX_DETECTIONS else len(scores)


@pytest.fixture(scope="module")
def model() -> MaskRCNN:
    return _small_model()


@pytest.fixture(scope="module")
def runs(model):
    """Per case: the input, the deploy outputs and torchvision's detections (computed once)."""
    cache: dict[str, tuple] = {}

    def run(case: str):
        if case not in cache:
            batch, height, width = CASES[case]
            images = _images(model, batch, height, width, seed=batch * height + width)
            with torch.no_grad():
                reference = model.reference()(list(images))
            cache[case] = (images, _deploy(model, images), reference)
        return cache[case]

    return run


@pytest.fixture(scope="module")
def onnx_session(model, tmp_path_factory):
    path = export_onnx(
        model, tmp_path_factory.mktemp("onnx") / "mask_rcnn.onnx", opset=17, exporter="torchscript"
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return onnx.load(str(path)), session


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_are_static_padded_and_sorted(runs, case):
    batch, height, width = CASES[case]
    _, out, _ = runs(case)
    assert out["boxes"].shape == (batch, MAX_DETECTIONS, 4) and out["boxes"].dtype == np.float32
    assert out["scores"].shape == (batch, MAX_DETECTIONS) and out["scores"].dtype == np.float32
    assert out["labels"].shape == (batch, MAX_DETECTIONS) and out["labels"].dtype == np.int64
    assert out["masks"].shape == (batch, MAX_DETECTIONS, MASK_SIZE, MASK_SIZE)
    assert out["masks"].dtype == np.float32
    assert out["num_detections"].shape == (batch,) and out["num_detections"].dtype == np.int64
    for i, k in enumerate(out["num_detections"]):
        assert 1 <= k <= MAX_DETECTIONS
        boxes, scores, labels, masks = (out[n][i] for n in ("boxes", "scores", "labels", "masks"))
        # Padding rows are all zeros.
        assert not boxes[k:].any() and not scores[k:].any() and not labels[k:].any() and not masks[k:].any()
        # Valid rows: sorted scores above the 0.05 threshold, foreground labels, boxes inside the image.
        assert np.all(np.diff(scores[:k]) <= 0) and np.all(scores[:k] > 0.05) and np.all(scores[:k] <= 1)
        assert np.all((labels[:k] >= 1) & (labels[:k] < NUM_CLASSES))
        assert np.all(boxes[:k, 2] >= boxes[:k, 0]) and np.all(boxes[:k, 3] >= boxes[:k, 1])
        assert boxes[:k].min() >= 0 and boxes[:k, 0::2].max() <= width and boxes[:k, 1::2].max() <= height
        assert masks[:k].min() >= 0 and masks[:k].max() <= 1 and masks[:k].std() > 0


def test_the_cases_exercise_padding_and_several_labels(runs):
    # Guards the two tests around it: without padded rows or with one label they would prove little.
    counts = np.concatenate([runs(case)[1]["num_detections"] for case in sorted(CASES)])
    labels = np.concatenate([runs(case)[1]["labels"].ravel() for case in sorted(CASES)])
    assert counts.min() < MAX_DETECTIONS
    assert len(set(labels[labels > 0].tolist())) >= 2


@pytest.mark.parametrize("case", sorted(CASES))
def test_deploy_matches_torchvision(model, runs, case):
    batch, height, width = CASES[case]
    _, out, reference = runs(case)
    results = model.postprocess(out, (height, width))
    assert len(reference) == len(results) == batch
    for i, (ref, res) in enumerate(zip(reference, results, strict=True)):
        ref = {key: value.numpy() for key, value in ref.items()}
        count = int(out["num_detections"][i])
        assert count == len(ref["scores"])
        k = _tie_free_prefix(ref["scores"], gap=3e-4)
        assert k >= 3, "too few tie-free detections for a meaningful comparison"
        np.testing.assert_allclose(out["boxes"][i, :k], ref["boxes"][:k], rtol=0, atol=1e-3)
        np.testing.assert_allclose(out["scores"][i, :k], ref["scores"][:k], rtol=0, atol=1e-4)
        np.testing.assert_array_equal(out["labels"][i, :k], ref["labels"][:k])
        # postprocess returns exactly the valid rows, and masks pasted as torchvision pastes them.
        assert res["boxes"].shape == (count, 4) and res["boxes"].dtype == np.float32
        assert res["labels"].dtype == np.int64 and res["scores"].shape == (count,)
        np.testing.assert_array_equal(res["boxes"], out["boxes"][i, :count])
        np.testing.assert_array_equal(res["labels"], out["labels"][i, :count])
        assert res["masks"].shape == (count, height, width) and res["masks"].dtype == np.bool_
        reference_masks = ref["masks"][:k, 0] >= 0.5
        agreement = (res["masks"][:k] == reference_masks).mean(axis=(1, 2))
        assert agreement.min() >= 0.99, agreement
        assert reference_masks.any(axis=(1, 2)).all()


@pytest.mark.slow
def test_onnx_graph_uses_standard_ops_with_static_detection_dims(onnx_session):
    graph, _ = onnx_session
    ops = {node.op_type for node in graph.graph.node}
    assert {"NonMaxSuppression", "RoiAlign", "TopK"} <= ops
    assert "Loop" not in ops and not any(domain.domain for domain in graph.opset_import if domain.domain)
    # The exporter labels output dims by itself; ONNX shape inference must find D, 4 and 28 static.
    for output in graph.graph.output:
        output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(graph, data_prop=True)
    dims = {
        o.name: [d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim]
        for o in inferred.graph.output
    }
    assert dims["boxes"][1:] == [MAX_DETECTIONS, 4]
    assert dims["scores"][1:] == dims["labels"][1:] == [MAX_DETECTIONS]
    assert dims["masks"][1:] == [MAX_DETECTIONS, MASK_SIZE, MASK_SIZE]
    assert len(dims["num_detections"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(ONNX_SHAPES))
def test_onnx_matches_torch_at_traced_and_other_sizes(model, runs, onnx_session, shape):
    batch, height, width = ONNX_SHAPES[shape]
    if shape in CASES:
        images, expected, _ = runs(shape)
    else:
        images = _images(model, batch, height, width, seed=7)
        expected = _deploy(model, images)
    _, session = onnx_session
    actual = dict(zip(model.output_names, session.run(None, {"images": images.numpy()}), strict=True))
    for name in model.output_names:
        assert actual[name].shape == expected[name].shape, name
        assert actual[name].dtype == expected[name].dtype, name
    assert actual["masks"].shape[1:] == (MAX_DETECTIONS, MASK_SIZE, MASK_SIZE)
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    for i, count in enumerate(expected["num_detections"]):
        assert not actual["scores"][i, count:].any() and not actual["boxes"][i, count:].any()
        k = _tie_free_prefix(expected["scores"][i, :count], gap=1e-4)
        assert k >= 1
        np.testing.assert_allclose(actual["boxes"][i, :k], expected["boxes"][i, :k], rtol=0, atol=1e-3)
        np.testing.assert_allclose(actual["scores"][i, :k], expected["scores"][i, :k], rtol=0, atol=1e-4)
        np.testing.assert_array_equal(actual["labels"][i, :k], expected["labels"][i, :k])
        np.testing.assert_allclose(actual["masks"][i, :k], expected["masks"][i, :k], rtol=0, atol=1e-3)


def test_paste_matches_torchvision_paste_masks_in_image():
    generator = torch.Generator().manual_seed(0)
    height, width, count = 90, 120, 64
    masks = torch.rand(count, MASK_SIZE, MASK_SIZE, generator=generator)
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([width, height]) - 10
    size = torch.rand(count, 2, generator=generator) * 60 + 0.5
    boxes = torch.cat([corner, corner + size], dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    expected = paste_masks_in_image(masks[:, None], boxes, (height, width))[:, 0]
    actual = paste_masks(masks, boxes, (height, width))
    assert actual.shape == (count, height, width)
    assert (actual - expected).abs().max() < 1e-4
    assert ((actual >= 0.5) == (expected >= 0.5)).float().mean() > 0.9999
    assert paste_masks(masks[:0], boxes[:0], (height, width)).shape == (0, height, width)


def test_postprocess_keeps_only_valid_rows(model):
    outputs = {
        "boxes": np.zeros((2, MAX_DETECTIONS, 4), np.float32),
        "scores": np.zeros((2, MAX_DETECTIONS), np.float32),
        "labels": np.zeros((2, MAX_DETECTIONS), np.int64),
        "masks": np.zeros((2, MAX_DETECTIONS, MASK_SIZE, MASK_SIZE), np.float32),
        "num_detections": np.array([1, 0], np.int64),
    }
    outputs["boxes"][0, 0] = [10, 20, 30, 60]
    outputs["scores"][0, 0], outputs["labels"][0, 0] = 0.9, 2
    outputs["masks"][0, 0] = 1.0
    first, second = model.postprocess(outputs, (64, 48))
    assert first["labels"].tolist() == [2] and first["scores"].tolist() == pytest.approx([0.9])
    # A full RoI mask fills its box (its one-cell zero border blurs away the outermost pixel row/column).
    expected = paste_masks_in_image(
        torch.ones(1, 1, MASK_SIZE, MASK_SIZE), torch.tensor([[10.0, 20, 30, 60]]), (64, 48)
    )
    assert first["masks"].shape == (1, 64, 48)
    np.testing.assert_array_equal(first["masks"], expected[:, 0].numpy() >= 0.5)
    assert first["masks"][0, 21:60, 11:30].all() and not first["masks"][0, :, :10].any()
    assert second["boxes"].shape == (0, 4) and second["masks"].shape == (0, 64, 48)


def test_reference_shares_the_parameters_of_the_deploy_model(model):
    reference = model.reference()
    assert isinstance(reference, TorchvisionMaskRCNN) and not reference.training
    ours, theirs = model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[key].data_ptr() == theirs[key].data_ptr() for key in ours)
    # Registered once: the hidden torchvision wrapper adds no parameters of its own.
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize(
    ("version", "builder"), [(1, maskrcnn_resnet50_fpn), (2, maskrcnn_resnet50_fpn_v2)], ids=["v1", "v2"]
)
def test_resnet50_state_dict_is_torchvisions(version, builder):
    with torch.device("meta"):
        ours = mask_rcnn(backbone="resnet50", version=version).state_dict()
        theirs = builder(weights=None, weights_backbone=None).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[key].shape == theirs[key].shape for key in ours)
    assert "roi_heads.mask_predictor.mask_fcn_logits.weight" in ours and "backbone.body.conv1.weight" in ours


def test_slim_resnet10_variant_is_small_and_runs():
    model = mask_rcnn(
        num_classes=7, backbone="resnet10", fpn_channels=64, representation_size=256, mask_channels=64
    )
    assert sum(p.numel() for p in model.parameters()) < 7_000_000  # ~12 MB stored as float16
    with torch.no_grad():
        boxes, _, _, masks, _ = model.eval()(torch.randn(2, 3, 64, 96))
    assert boxes.shape == (2, 100, 4) and masks.shape == (2, 100, MASK_SIZE, MASK_SIZE)


def test_resnet18_uses_torchvision_fpn_backbone_names():
    with torch.device("meta"):
        model = mask_rcnn(num_classes=5, backbone="resnet18", max_detections=7)
        # torchvision's ResNet-FPN layout, with trainable batch norm (the only difference: its buffers).
        body = resnet_fpn_backbone(
            backbone_name="resnet18", weights=None, trainable_layers=5, norm_layer=torch.nn.BatchNorm2d
        )
        theirs = TorchvisionMaskRCNN(body, num_classes=5).state_dict()
    assert list(model.state_dict()) == list(theirs)
    assert model.max_detections == 7 and model.num_classes == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backbone": "resnet101"}, "unknown backbone 'resnet101'"),
        ({"backbone": "resnet50", "fpn_channels": 64}, "resnet50 keeps torchvision's head widths"),
        ({"backbone": "resnet10", "representation_size": 4}, "head widths must be ints >= 8"),
        ({"version": 3}, "version must be 1 or 2"),
        ({"backbone": "resnet18", "version": 2}, "only for resnet50"),
        ({"num_classes": 1}, "num_classes must be an int >= 2"),
        ({"max_detections": 0}, "max_detections must be an int >= 1"),
        ({"backbone": "resnet18", "num_classes": 2, "max_detections": 1001}, "cannot exceed"),
    ],
)
def test_bad_options_raise_value_error(options, message):
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        mask_rcnn(**options)


@pytest.mark.slow
def test_deploy_map_matches_torchvision_forward_with_the_shipped_weights():
    # The bar: with the same weights, the deploy graph's box and mask AP on the evaluation set
    # are within 0.2 points of torchvision's own forward (its own NMS, RoIAlign and mask paste).
    from segbench.data.shapes import ShapesDataset
    from segbench.metrics.tasks import evaluate_instance_task
    from segbench.models import build_model

    model = build_model("mask_rcnn", weights="trained")
    samples = list(ShapesDataset(12, 128, 128, seed=0, split="val"))

    @torch.no_grad()
    def deploy(images: np.ndarray) -> list[dict]:
        outputs = model(torch.from_numpy(model.preprocess(images)["images"]))
        arrays = {name: out.numpy() for name, out in zip(model.output_names, outputs, strict=True)}
        return model.postprocess(arrays, images.shape[1:3])

    @torch.no_grad()
    def reference(images: np.ndarray) -> list[dict]:
        batch = torch.from_numpy(model.preprocess(images)["images"])
        detections = model.reference()(list(batch))
        return [
            {
                "boxes": d["boxes"].numpy(),
                "scores": d["scores"].numpy(),
                "labels": d["labels"].numpy(),
                "masks": (d["masks"][:, 0] > 0.5).numpy(),
            }
            for d in detections
        ]

    ours = evaluate_instance_task(deploy, samples, batch_size=4)
    theirs = evaluate_instance_task(reference, samples, batch_size=4)
    print(f"deploy {ours}, torchvision {theirs}")
    assert theirs["segm_ap"] > 0.3  # real detections, not noise
    for metric in ("bbox_ap", "segm_ap"):
        assert abs(ours[metric] - theirs[metric]) * 100 <= 0.2
