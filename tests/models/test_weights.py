import pytest
import torch
from safetensors.torch import save_file

from segbench.errors import ConfigError, WeightsError
from segbench.models import build_model, validate_model
from segbench.models.weights import checkpoint_metadata, save_checkpoint

OPTIONS = {"base_channels": 4, "num_classes": 3}


def test_pt_checkpoint_round_trip(tmp_path):
    model = build_model("unet", options=OPTIONS, seed=1)
    path = tmp_path / "unet.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = build_model("unet", weights=str(path), options=OPTIONS, seed=2)
    assert torch.equal(loaded.head.weight, model.head.weight)


def test_safetensors_checkpoint_carries_its_options(tmp_path):
    model = build_model("unet", options=OPTIONS, seed=1)
    path = tmp_path / "unet.safetensors"
    save_checkpoint(model, path, OPTIONS, extra={"val_miou": 0.5})
    assert checkpoint_metadata(path) == {"options": OPTIONS, "val_miou": 0.5}
    loaded = build_model("unet", weights=str(path))  # options come from the file
    assert loaded.num_classes == 3
    # Stored as float16 to keep packaged checkpoints small; loaded as float32.
    assert loaded.head.weight.dtype == torch.float32
    assert torch.equal(loaded.head.weight, model.head.weight.half().float())


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match=r"weights file not found: .*nope.pt"):
        build_model("unet", weights=str(tmp_path / "nope.pt"), options=OPTIONS)


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"cannot read weights file .*bad\.pt"):
        build_model("unet", weights=str(path), options=OPTIONS)


def test_pickled_objects_are_refused(tmp_path):
    # weights_only=True: an arbitrary pickled object is not loaded.
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": ConfigError("x")}, path)
    with pytest.raises(WeightsError, match="cannot read weights file"):
        build_model("unet", weights=str(path), options=OPTIONS)


def test_mismatched_weights_name_the_problem(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"head.weight": torch.zeros(7, 4, 1, 1)}, str(path))
    with pytest.raises(WeightsError, match=r"do not fit the model: .*missing.*wrong shape"):
        build_model("unet", weights=str(path), options=OPTIONS)


def test_unsupported_weights_format(tmp_path):
    path = tmp_path / "w.onnx"
    path.write_bytes(b"")
    with pytest.raises(WeightsError, match="unsupported weights format"):
        build_model("unet", weights=str(path), options=OPTIONS)


def test_model_options_are_validated_without_building_weights():
    validate_model("fcn8s", {"backbone": "vgg19"})  # full width, on the meta device: instant
    with pytest.raises(ConfigError, match=r"unknown option.*depth.*valid options: num_classes"):
        validate_model("fcn8s", {"depth": 3})
    with pytest.raises(ConfigError, match="unknown backbone 'resnet50'"):
        validate_model("fcn16s", {"backbone": "resnet50"})
    with pytest.raises(ConfigError, match="unknown model 'deeplab'; valid models: fcn32s"):
        validate_model("deeplab")


def test_mask_rcnn_coco_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    # A torchvision-style checkpoint (frozen batch norm: no num_batches_tracked) under the file name
    # torchvision's own weights enum uses, in the hub cache: `weights: coco` loads it offline.
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    source = build_model("mask_rcnn", seed=3)
    state = {k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / MaskRCNN_ResNet50_FPN_Weights.COCO_V1.url.rsplit("/", 1)[1])
    loaded = build_model("mask_rcnn", weights="coco")
    torch.testing.assert_close(
        loaded.backbone.body.conv1.weight, source.backbone.body.conv1.weight.half().float()
    )


def test_missing_coco_weights_name_the_expected_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(
        WeightsError, match=r"coco weights for mask_rcnn are read from .*maskrcnn_resnet50_fpn_v2_coco"
    ):
        validate_model("mask_rcnn", {"version": 2}, "coco")
    with pytest.raises(WeightsError, match="COCO weights are for backbone resnet50"):
        validate_model("mask_rcnn", {"backbone": "resnet18"}, "coco")


def test_rounding_gives_exactly_the_values_a_checkpoint_stores(tmp_path):
    from segbench.models.weights import round_to_checkpoint_precision

    model = build_model("unet", options=OPTIONS, seed=4)
    path = tmp_path / "unet.safetensors"
    save_checkpoint(model, path, OPTIONS)
    round_to_checkpoint_precision(model)
    loaded = build_model("unet", weights=str(path))
    for (name, ours), theirs in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_validation_reads_no_tensor_data_yet_rejects_truncated_files(tmp_path, suffix):
    # Up-front validation reads only names and shapes (the file is read whole once, when the model is
    # built), but a file cut short must still fail there, as one line.
    model = build_model("unet", options=OPTIONS)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save(model.state_dict(), path)
    else:
        save_checkpoint(model, path, OPTIONS)
    validate_model("unet", OPTIONS, str(path))
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(WeightsError, match=r"cannot read weights file .*w\."):
        validate_model("unet", OPTIONS, str(path))
