import json

import pytest
import torch
from torchvision.models import vgg11, vgg16

from segbench.models import build_model, model_stats, registry
from segbench.models.fcn import bilinear_kernel, fcn8s
from segbench.models.registry import resolve_options

SMALL = {
    "fcn32s": {"width": 0.0625, "num_classes": 5},
    "fcn16s": {"width": 0.0625, "num_classes": 5},
    "fcn8s": {"width": 0.0625, "num_classes": 5},
    "unet": {"base_channels": 4, "num_classes": 5},
}


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize(
    ("batch", "height", "width"), [(1, 64, 64), (2, 96, 128), (3, 37, 131), (1, 256, 33)]
)
def test_output_matches_input_size(name, batch, height, width):
    model = build_model(name, options=SMALL[name])
    with torch.no_grad():
        logits = model(torch.randn(batch, 3, height, width))
    assert logits.shape == (batch, 5, height, width)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_preprocess_and_postprocess_shapes(name):
    model = build_model(name, options=SMALL[name])
    images = torch.randint(0, 256, (2, 40, 72, 3), dtype=torch.uint8).numpy()
    feeds = model.preprocess(images)
    assert feeds["images"].shape == (2, 3, 40, 72) and feeds["images"].dtype.name == "float32"
    with torch.no_grad():
        logits = model(torch.from_numpy(feeds["images"])).numpy()
    labels = model.postprocess({"logits": logits}, (40, 72))
    assert labels.shape == (2, 40, 72)
    assert labels.min() >= 0 and labels.max() < 5


def test_preprocess_normalises_with_imagenet_statistics():
    model = build_model("unet", options=SMALL["unet"])
    images = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8).numpy()
    x = model.preprocess(images)["images"]
    assert x[0, 0, 0, 0] == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    assert x[0, 2, 1, 1] == pytest.approx((1 - 0.406) / 0.225, rel=1e-5)


def test_random_weights_are_seeded():
    a = build_model("fcn8s", options=SMALL["fcn8s"], seed=3)
    b = build_model("fcn8s", options=SMALL["fcn8s"], seed=3)
    c = build_model("fcn8s", options=SMALL["fcn8s"], seed=4)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.score_fr.weight, c.score_fr.weight)


@pytest.mark.slow
def test_full_width_fcn_backbone_is_torchvision_vgg():
    # The backbone is torchvision's own VGG layer list: its ImageNet weights load unchanged.
    model = fcn8s(backbone="vgg16")
    model.backbone.load_state_dict(vgg16().features.state_dict())
    model11 = fcn8s(backbone="vgg11", width=1.0)
    model11.backbone.load_state_dict(vgg11().features.state_dict())


def test_skip_layers_start_as_no_op():
    model = build_model("fcn8s", options=SMALL["fcn8s"])
    assert torch.count_nonzero(model.score_pool3.weight) == 0
    assert torch.count_nonzero(model.score_pool4.weight) == 0


def test_bilinear_kernel_upsamples_a_constant_to_a_constant():
    layer = torch.nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(2, 4))
        out = layer(torch.ones(1, 2, 6, 6))
    # Away from the border, bilinear upsampling of a constant is that constant.
    assert torch.allclose(out[:, :, 2:-2, 2:-2], torch.ones(1, 2, 8, 8))


@pytest.mark.parametrize(
    ("name", "params_m"),
    # Published sizes: FCN-8s/VGG16 ~134M parameters (21 classes), U-Net ~31M.
    [("fcn8s", 134.5), ("unet", 31.0)],
)
def test_registry_stats_match_the_published_architectures(name, params_m):
    stats = model_stats(name, height=224, width=224)
    assert stats["params"] / 1e6 == pytest.approx(params_m, abs=0.1)
    assert stats["gflops"] > 10


def test_gflops_scale_with_input_area():
    small = model_stats("unet", {"base_channels": 8}, 128, 128)["gflops"]
    large = model_stats("unet", {"base_channels": 8}, 256, 256)["gflops"]
    assert large == pytest.approx(4 * small, rel=1e-6)


@pytest.mark.parametrize("name", ["mask_rcnn", "mask2former"])
def test_networks_the_meta_device_refuses_are_counted_on_a_real_forward(name):
    # Their shipped checkpoints' options: small, so the real CPU forward costs about a second.
    options = resolve_options(name, "trained")
    small = model_stats(name, options, 128, 128)
    large = model_stats(name, options, 256, 256)
    assert small["params"] == large["params"] > 0
    assert 0 < small["gflops"] < large["gflops"]
    # Seeded weights and input: the same count every time (and from the cache, a copy).
    again = model_stats(name, options, 128, 128)
    assert again == small and again is not small


def test_a_real_forward_count_is_kept_in_the_cache_for_the_next_process(export_cache, monkeypatch):
    options = resolve_options("mask_rcnn", "trained")
    forwards = []
    count = registry._count_gflops
    monkeypatch.setattr(registry, "_count_gflops", lambda model, image: forwards.append(image.device.type)
                        or count(model, image))  # fmt: skip
    monkeypatch.setattr(registry, "_COUNTED", {})
    first = model_stats("mask_rcnn", options, 96, 96)
    assert forwards == ["meta", "cpu"]  # the meta device refuses it: one real forward
    [stored] = (export_cache / "model-stats").iterdir()
    monkeypatch.setattr(registry, "_COUNTED", {})  # as a new process starts
    assert model_stats("mask_rcnn", options, 96, 96) == first and forwards == ["meta", "cpu", "meta"]
    stored.write_text("{torn")  # an unreadable entry is counted again, never trusted
    monkeypatch.setattr(registry, "_COUNTED", {})
    assert model_stats("mask_rcnn", options, 96, 96) == first and forwards[-1] == "cpu"
    assert json.loads(stored.read_text()) == first
