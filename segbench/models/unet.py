"""U-Net (Ronneberger, Fischer and Brox, MICCAI 2015), in its common padded form.

Four down stages and four up stages of two 3x3 conv + BatchNorm + ReLU, skip concatenation, a 1x1 head.
``base_channels=64`` with transposed-convolution upsampling is the classic network; ``bilinear=True`` swaps
the transposed convolutions for bilinear upsampling (and halves the bottleneck, as is usual for that form).
Inputs whose height or width is not a multiple of 16 are zero-padded and the output cropped back.
"""

from __future__ import annotations

import torch
from torch import nn

from segbench.models.base import SegmentationModel, pad_to_multiple


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Upsample the deeper map 2x, concatenate the skip, then a DoubleConv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, bilinear: bool) -> None:
        super().__init__()
        self.up: nn.Upsample | nn.ConvTranspose2d
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            up_channels = in_channels
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
            up_channels = in_channels // 2
        self.conv = DoubleConv(up_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(SegmentationModel):
    size_divisor = 16

    def __init__(self, num_classes: int = 21, base_channels: int = 64, bilinear: bool = False) -> None:
        super().__init__(num_classes)
        if base_channels < 1:
            raise ValueError(f"base_channels must be >= 1, got {base_channels}")
        c = base_channels
        factor = 2 if bilinear else 1
        self.inc = DoubleConv(3, c)
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout))
            for cin, cout in ((c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c), (8 * c, 16 * c // factor))
        )
        self.ups = nn.ModuleList(
            [
                Up(16 * c // factor, 8 * c, 8 * c // factor, bilinear),
                Up(8 * c // factor, 4 * c, 4 * c // factor, bilinear),
                Up(4 * c // factor, 2 * c, 2 * c // factor, bilinear),
                Up(2 * c // factor, c, c, bilinear),
            ]
        )
        self.head = nn.Conv2d(c, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2], images.shape[-1]
        x = self.inc(pad_to_multiple(images, self.size_divisor))
        skips = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)[:, :, :height, :width]


def unet(num_classes: int = 21, base_channels: int = 64, bilinear: bool = False) -> UNet:
    """The classic U-Net (base_channels=64, transposed-convolution upsampling)."""
    return UNet(num_classes, base_channels, bilinear)
