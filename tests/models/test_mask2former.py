import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from segbench.export.onnx import check_parity, export_and_verify, export_onnx
from segbench.models.mask2former import Mask2Former, mask2former
from segbench.models.weights import apply_state_dict, load_state_dict

TINY = {
    "num_classes": 6,
    "backbone": "resnet18",
    "num_queries": 8,
    "hidden_dim": 32,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "stuff_classes": [0, 1, 2],
}


@pytest.fixture(scope="module")
def model() -> Mask2Former:
    torch.manual_seed(0)
    return mask2former(**TINY).eval()


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 64, 64), (2, 64, 96), (2, 96, 64)])
def test_raw_output_shapes(model, batch, height, width):
    with torch.no_grad():
        class_logits, mask_logits = model(torch.randn(batch, 3, height, width))
    assert class_logits.shape == (batch, 8, 7)  # 6 classes + "no object"
    assert mask_logits.shape == (batch, 8, height // 4, width // 4)


def test_transformers_checkpoints_load_unchanged(model, tmp_path):
    # The state dict is transformers' own (model.*, class_predictor.*, criterion.*): a file holding the
    # transformers network's weights loads into segbench's wrapper as it is.
    state = model._network[0].state_dict()
    assert set(state) == set(model.state_dict())
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    fresh = mask2former(**TINY).eval()
    apply_state_dict(fresh, load_state_dict(path), str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


def crafted_outputs() -> dict[str, np.ndarray]:
    """Query 0: class 4 (a thing) in a square; query 1: class 0 (stuff) elsewhere; others: no object."""
    class_logits = np.full((1, 8, 7), -10.0, np.float32)
    class_logits[0, :, 6] = 10.0  # "no object"
    class_logits[0, 0, 6], class_logits[0, 0, 4] = -10.0, 10.0
    class_logits[0, 1, 6], class_logits[0, 1, 0] = -10.0, 10.0
    mask_logits = np.full((1, 8, 16, 16), -10.0, np.float32)
    mask_logits[0, 0, 4:12, 4:12] = 10.0
    mask_logits[0, 1] = 10.0
    mask_logits[0, 1, 4:12, 4:12] = -10.0
    return {"class_logits": class_logits, "mask_logits": mask_logits}


def test_panoptic_postprocess(model):
    model.task = "panoptic"
    ((id_map, segments),) = model.postprocess(crafted_outputs(), (64, 64))
    assert id_map.shape == (64, 64)
    by_category = {s["category_id"]: s for s in segments}
    assert set(by_category) == {0, 4}
    assert by_category[4]["isthing"] and not by_category[0]["isthing"]
    square = id_map == by_category[4]["id"]
    assert square[20:44, 20:44].all() and not square[:8].any()
    assert (id_map == by_category[0]["id"])[:8].all()


def test_semantic_and_instance_postprocess(model):
    model.task = "semantic"
    (labels,) = model.postprocess(crafted_outputs(), (64, 64))
    assert labels.shape == (64, 64) and labels[32, 32] == 4 and labels[2, 2] == 0
    model.task = "instance"
    (instances,) = model.postprocess(crafted_outputs(), (64, 64))
    thing = list(instances["labels"]).index(4)
    assert instances["masks"].shape[1:] == (64, 64)
    assert instances["masks"][thing][20:44, 20:44].all() and instances["scores"][thing] > 0.9
    model.task = "panoptic"


@pytest.mark.slow
def test_one_graph_per_size_passes_parity(model, tmp_path):
    export = export_and_verify(
        model, tmp_path / "m2f.onnx", opset=17, exporter="torchscript", static_size=(64, 96)
    )
    assert [r.shape for r in export.parity] == [(1, 3, 64, 96), (3, 3, 64, 96)]
    assert all(r.passed and r.max_abs_err < 1e-4 for r in export.parity)


@pytest.mark.slow
def test_dynamic_size_graph_is_wrong_elsewhere_which_is_why_sizes_are_static(model, tmp_path):
    # The reason for dynamic_spatial = False: the legacy exporter's "dynamic" graph bakes the traced
    # feature-map sizes in, and is silently wrong at any other size.
    path = export_onnx(model, tmp_path / "dyn.onnx", opset=17, exporter="torchscript")
    traced, other = check_parity(model, path, [(1, 96, 128), (1, 64, 96)])
    assert traced.passed
    assert not other.passed and other.max_abs_err > 1e-3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backbone": "vit"}, "unknown backbone 'vit'"),
        ({"task": "depth"}, "unknown task 'depth'"),
        ({"stuff_classes": [9]}, "stuff class 9 is outside"),
        ({"num_queries": 0}, "num_queries >= 1"),
        ({"hidden_dim": 48}, "hidden_dim must be a positive multiple of 32"),
    ],
)
def test_bad_options(options, message):
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        mask2former(**{**TINY, **options})


def test_official_checkpoint_directory_loads_as_weights(tmp_path):
    # A transformers save_pretrained folder (config.json + model.safetensors), as the official
    # checkpoints are distributed: `weights: DIR` rebuilds that architecture and loads its weights.
    from segbench.models import build_model

    torch.manual_seed(1)
    source = mask2former(**TINY).eval()
    source._network[0].save_pretrained(tmp_path)
    loaded = build_model("mask2former", weights=str(tmp_path), options={"stuff_classes": [0, 1, 2]})
    assert loaded.options["config"] == str(tmp_path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))


def test_unreadable_config_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read a Mask2Former config from"):
        mask2former(config=str(tmp_path))
