"""torch backend options that run on a CPU: torch.compile, and the CUDA-only options refused there."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from segbench.backends.torch_backend import TorchConfig, TorchRunner
from segbench.models.base import SegmentationModel


class OneConv(SegmentationModel):
    def __init__(self, num_classes: int = 3):
        super().__init__(num_classes)
        self.conv = torch.nn.Conv2d(3, num_classes, 3, padding=1)

    def forward(self, images):
        return self.conv(images)


def test_compiled_forward_matches_eager():
    torch.manual_seed(0)
    model = OneConv().eval()
    feeds = {"images": np.random.default_rng(0).normal(size=(2, 3, 16, 24)).astype(np.float32)}
    with TorchRunner(model, TorchConfig(), "fp32") as eager:
        expected = eager.infer(feeds)["logits"]
    with TorchRunner(model, TorchConfig(compile="default"), "fp32") as compiled:
        actual = compiled.infer(feeds)["logits"]
        assert compiled.describe()["compile"] == "default"
    np.testing.assert_allclose(actual, expected, atol=1e-5)


@pytest.mark.parametrize("option", [{"cuda_graph": True}, {"pinned_memory": True}])
def test_cuda_only_options_are_refused_on_the_cpu(option):
    with pytest.raises(ValidationError, match="need device: cuda"):
        TorchConfig(device="cpu", **option)
    assert TorchConfig(device="cuda", **option).variant() == option
