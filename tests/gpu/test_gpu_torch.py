"""The torch CUDA runner on a real GPU: stage times, CUDA graphs and their fallback, TF32 against fp64."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch

from segbench.backends.torch_backend import TorchConfig, TorchRunner
from segbench.data.shapes import scene_images
from segbench.models.base import SegmentationModel
from segbench.models.registry import build_model
from tests.gpu.tiny_graph import FP32_TOLERANCE, TF32_TOLERANCE, relative_error

pytestmark = pytest.mark.gpu


def trained_runner(name: str, precision: str, **options) -> TorchRunner:
    config = TorchConfig(device="cuda", precisions=[precision], **options)
    return TorchRunner(build_model(name, "trained"), config, precision)


def scene_feeds(runner: TorchRunner, batch: int, height: int, width: int, seed: int = 0) -> dict:
    return runner.model.preprocess(scene_images(batch, height, width, seed=seed))


@pytest.mark.parametrize(
    ("precision", "options"),
    [("fp32", {}), ("fp32", {"pinned_memory": False}), ("fp16", {"channels_last": True}),
     ("fp16", {"cuda_graph": True}), ("bf16", {})],
)  # fmt: skip
def test_event_stage_times_fit_inside_the_host_time_of_the_call(precision, options):
    """h2d + compute + d2h come from CUDA events on the call's stream: together they cannot exceed the
    host time of the whole call (a sum above it means an event brackets work of another call)."""
    with trained_runner("unet", precision, **options) as runner:
        feeds = scene_feeds(runner, 4, 512, 512)
        for _ in range(3):
            runner.infer(feeds)
        host, summed = [], []
        for _ in range(15):
            start = time.perf_counter()
            runner.infer(feeds)
            host.append((time.perf_counter() - start) * 1e3)
            stages = runner.last_stages_ms
            assert set(stages) == {"h2d", "compute", "d2h"} and all(v > 0 for v in stages.values()), stages
            summed.append(sum(stages.values()))
        graph = runner.describe()["cuda_graph"]
    assert np.median(summed) <= 1.02 * np.median(host) + 0.05, (np.median(summed), np.median(host))
    assert graph is options.get("cuda_graph", False)


def test_cuda_graph_replay_matches_eager_across_shapes_and_a_scribbled_cache():
    """Two captured shapes, the cache emptied and overwritten with NaN between replays: the replay still
    reads its own static buffers."""
    with trained_runner("unet", "fp16") as eager, trained_runner("unet", "fp16", cuda_graph=True) as graph:
        small, large = scene_feeds(eager, 1, 512, 512, seed=1), scene_feeds(eager, 4, 768, 768, seed=2)
        expected = eager.infer(small)["logits"]
        graph.infer(small)
        graph.infer(large)
        torch.cuda.empty_cache()
        scribble = torch.full((1 << 28,), float("nan"), dtype=torch.float16, device="cuda")
        del scribble
        again = graph.infer(small)["logits"]
        info = graph.describe()
    assert info["cuda_graph"] is True and "cuda_graph_fallback" not in info
    assert not np.isnan(again).any()
    np.testing.assert_allclose(again, expected, rtol=2e-2, atol=2e-2)
    assert (again.argmax(1) == expected.argmax(1)).mean() > 0.999


def test_mask_rcnn_capture_falls_back_to_eager_once_and_says_why():
    """Its NMS and nonzero synchronise on data, which a capture refuses: one failed capture, then eager,
    with the outputs eager gives and the reason in describe()."""
    with (
        trained_runner("mask_rcnn", "fp32", cuda_graph=True) as graph,
        trained_runner("mask_rcnn", "fp32") as eager,
    ):
        feeds = scene_feeds(eager, 1, 256, 256, seed=3)
        first = graph.infer(feeds)
        second = graph.infer(feeds)
        expected = eager.infer(feeds)
        info = graph.describe()
    assert info["cuda_graph"] == "fallback" and info["cuda_graph_fallback"], info
    for name, value in expected.items():
        np.testing.assert_allclose(first[name], value, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(first[name], second[name])


class ChannelProjection(SegmentationModel):
    """A 1024-term matmul per pixel (cuBLAS, where TF32 applies for certain): lift 3 channels to 1024 with
    a fixed ReLU feature map, then project to 64 classes."""

    def __init__(self) -> None:
        super().__init__(num_classes=64)
        generator = torch.Generator().manual_seed(0)
        self.lift = torch.nn.Parameter(torch.randn(1024, 3, generator=generator))
        self.project = torch.nn.Parameter(torch.randn(64, 1024, generator=generator) * 0.03)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(torch.einsum("nchw,dc->nhwd", images, self.lift))
        return torch.einsum("nhwd,kd->nkhw", hidden, self.project)


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_is_off_unless_asked_measured_against_fp64(tf32):
    model = ChannelProjection().eval()
    images = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    reference = copy.deepcopy(model).double()(torch.from_numpy(images).double()).detach().numpy()
    before = torch.backends.cuda.matmul.allow_tf32
    with TorchRunner(model, TorchConfig(device="cuda", tf32=tf32), "fp32") as runner:
        error = relative_error(runner.infer({"images": images})["logits"], reference)
    assert torch.backends.cuda.matmul.allow_tf32 == before  # restored on deactivate
    if tf32:
        assert 10 * FP32_TOLERANCE < error < TF32_TOLERANCE, error  # TF32 really ran, and only TF32
    else:
        assert error < FP32_TOLERANCE, error
