"""FCN-32s / FCN-16s / FCN-8s on a VGG backbone (Long, Shelhamer and Darrell, CVPR 2015).

The backbone is torchvision's own VGG layer list (``make_layers`` over ``cfgs``), so at ``width=1`` the
``backbone.*`` parameters have exactly the names and shapes of ``torchvision.models.vgg16().features``.
fc6/fc7 are convolutions, the score layers are 1x1 convolutions, upsampling is learned with transposed
convolutions initialised to bilinear interpolation, and skips come from pool4 (16s) and pool3 + pool4 (8s).

Differences from the Caffe original, on purpose: instead of padding the first convolution by 100 and
cropping with fixed offsets, the input is zero-padded to a multiple of 32 and the output cropped back,
which gives the same "any input size" behaviour with a graph that exports with dynamic height/width.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from segbench.models.base import SegmentationModel, pad_to_multiple

VGG_CONFIGS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Per-channel bilinear upsampling weights for a ``ConvTranspose2d(channels, channels, kernel_size)``.

    torchvision has no helper for this; it is the standard FCN initialisation.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    ramp = 1 - torch.abs(torch.arange(kernel_size, dtype=torch.float32) - center) / factor
    kernel = ramp[:, None] * ramp[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = kernel
    return weight


def _upsample(channels: int, stride: int) -> nn.ConvTranspose2d:
    # kernel 2s, padding s/2: output is exactly stride x input, so no crop offsets are needed.
    layer = nn.ConvTranspose2d(channels, channels, 2 * stride, stride=stride, padding=stride // 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, 2 * stride))
    return layer


def _zero_init(conv: nn.Conv2d) -> None:
    """Zero init: the skip starts as a no-op, so training begins from the coarser net's output."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _scaled(channels: int, width: float) -> int:
    return max(8, round(channels * width))


class FCN(SegmentationModel):
    size_divisor = 32

    def __init__(
        self,
        stride: int,
        num_classes: int = 21,
        backbone: str = "vgg16",
        width: float = 1.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(num_classes)
        if stride not in (8, 16, 32):
            raise ValueError(f"FCN output stride must be 8, 16 or 32, got {stride}")
        if backbone not in VGG_CONFIGS:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(VGG_CONFIGS)}")
        if not 0 < width <= 1:
            raise ValueError(f"width must be in (0, 1], got {width}")
        self.stride = stride
        cfg = [v if v == "M" else _scaled(v, width) for v in cfgs[VGG_CONFIGS[backbone]]]
        self.backbone = make_layers(cfg, batch_norm=batch_norm)
        pools = [i for i, layer in enumerate(self.backbone) if isinstance(layer, nn.MaxPool2d)]
        # Slice points: the backbone runs to pool3, then pool4, then pool5.
        self._pool3_end, self._pool4_end = pools[2] + 1, pools[3] + 1
        pool3_channels, pool4_channels, pool5_channels = (_channels_at_pool(cfg, k) for k in (3, 4, 5))
        fc_channels = _scaled(4096, width)
        self.head = nn.Sequential(
            nn.Conv2d(pool5_channels, fc_channels, 7, padding=3),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout2d(),
            nn.Conv2d(fc_channels, fc_channels, 1),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout2d(),
        )
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        if stride <= 16:
            self.score_pool4 = nn.Conv2d(pool4_channels, num_classes, 1)
            self.upscore2 = _upsample(num_classes, 2)
            _zero_init(self.score_pool4)
        if stride == 8:
            self.score_pool3 = nn.Conv2d(pool3_channels, num_classes, 1)
            self.upscore_pool4 = _upsample(num_classes, 2)
            _zero_init(self.score_pool3)
        self.upscore_final = _upsample(num_classes, stride)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2], images.shape[-1]
        x = pad_to_multiple(images, self.size_divisor)
        pool3 = self.backbone[: self._pool3_end](x)
        pool4 = self.backbone[self._pool3_end : self._pool4_end](pool3)
        pool5 = self.backbone[self._pool4_end :](pool4)
        score = self.score_fr(self.head(pool5))
        if self.stride <= 16:
            score = self.upscore2(score) + self.score_pool4(pool4)
        if self.stride == 8:
            score = self.upscore_pool4(score) + self.score_pool3(pool3)
        return self.upscore_final(score)[:, :, :height, :width]


def _channels_at_pool(cfg: list, k: int) -> int:
    """Channel count of the feature map that the k-th (1-based) max-pool of a VGG cfg emits."""
    pool_positions = [i for i, v in enumerate(cfg) if v == "M"]
    return [v for v in cfg[: pool_positions[k - 1]] if v != "M"][-1]


def fcn32s(
    num_classes: int = 21, backbone: str = "vgg16", width: float = 1.0, batch_norm: bool = False
) -> FCN:
    """FCN-32s: one 32x learned upsampling of the pool5 score."""
    return FCN(32, num_classes, backbone, width, batch_norm)


def fcn16s(
    num_classes: int = 21, backbone: str = "vgg16", width: float = 1.0, batch_norm: bool = False
) -> FCN:
    """FCN-16s: pool5 score upsampled 2x and fused with a pool4 score, then 16x."""
    return FCN(16, num_classes, backbone, width, batch_norm)


def fcn8s(
    num_classes: int = 21, backbone: str = "vgg16", width: float = 1.0, batch_norm: bool = False
) -> FCN:
    """FCN-8s: as 16s, fused again with a pool3 score, then 8x."""
    return FCN(8, num_classes, backbone, width, batch_norm)
