"""SegNet (Badrinarayanan, Kendall and Cipolla, TPAMI 2017), with the VGG16-BN encoder of the paper.

The encoder is torchvision's VGG16-BN layer list (``make_layers(cfgs["D"], batch_norm=True)``), so at
``width=1`` its ``encoder.*`` parameters have the names and shapes of ``vgg16_bn().features``. Each of
its five 2x2 max-pools keeps the position of every maximum; the mirrored decoder puts each value back at
that position (max-unpooling, the rest zero) and densifies it with 3x3 conv + BN + ReLU, ending in a
3x3 convolution to the class scores. No skip features are concatenated: only the indices cross over.

``unpool`` picks how the indices travel, with identical outputs:

* ``"indices"`` (default, as the paper): ``max_pool2d(return_indices=True)`` and ``max_unpool2d``,
  exported as ONNX ``MaxPool`` with its ``Indices`` output and ``MaxUnpool``. TensorRT's ONNX parser
  supports neither (no ``MaxUnpool`` importer; ``MaxPool``'s ``Indices`` output unsupported).
* ``"argmax"`` (a TensorRT deploy form): the decoder finds each window's maximum again from the encoder
  feature map it keeps (``pixel_unshuffle`` into the 4 window positions, ``argmax`` taking the first
  maximum, as ``max_pool2d`` does) and places the value there with a comparison and ``Where``, then
  ``pixel_shuffle`` back: SpaceToDepth / ArgMax / Equal / Where / DepthToSpace, all in TensorRT's
  parser. It holds the pre-pool maps (4x the memory of the indices' positions) instead of indices.

Inputs are zero-padded to a multiple of 32 (five exact 2x poolings) and the scores cropped back.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.vgg import cfgs, make_layers

from segbench.models.base import SegmentationModel, pad_to_multiple

UNPOOL_MODES = ("indices", "argmax")


def _scaled(channels: int, width: float) -> int:
    return max(8, round(channels * width))


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def unpool_by_argmax(values: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``max_unpool2d(values, indices of max_pool2d(features, 2, 2))`` without indices: each value goes
    to the first maximum of its 2x2 window of ``features`` (row-major, as ``max_pool2d`` picks it)."""
    windows = F.pixel_unshuffle(features, 2)  # [N, 4C, h, w]; channel 4c + 2i + j is window cell (i, j)
    winner = windows.unflatten(1, (-1, 4)).argmax(2, keepdim=True)  # [N, C, 1, h, w]
    cells = torch.arange(4, device=values.device).view(1, 1, 4, 1, 1)
    placed = torch.where(winner == cells, values.unsqueeze(2), torch.zeros((), dtype=values.dtype))
    return F.pixel_shuffle(placed.flatten(1, 2), 2)


class SegNet(SegmentationModel):
    size_divisor = 32

    def __init__(self, num_classes: int = 21, width: float = 1.0, unpool: str = "indices") -> None:
        super().__init__(num_classes)
        if not 0 < width <= 1:
            raise ValueError(f"width must be in (0, 1], got {width}")
        if unpool not in UNPOOL_MODES:
            raise ValueError(f"unpool must be one of {', '.join(UNPOOL_MODES)}, got {unpool!r}")
        self.unpool = unpool
        cfg = [v if v == "M" else _scaled(v, width) for v in cfgs["D"]]
        self.encoder = make_layers(cfg, batch_norm=True)
        # The conv + BN + ReLU runs between the pools, as index ranges of the encoder list; the pools
        # themselves run functionally so they can return their indices.
        pools = [i for i, layer in enumerate(self.encoder) if isinstance(layer, nn.MaxPool2d)]
        self._stages = list(zip([0, *(p + 1 for p in pools[:-1])], pools, strict=True))
        # Decoder stage k mirrors encoder stage k: as many convs, the last one mapping back to the
        # channels of the stage before (the paper's VGG16 decoder); stage 1 ends in the class scores.
        widths: list[list[int]] = [[]]
        for v in cfg:
            widths.append([]) if v == "M" else widths[-1].append(v)
        widths.pop()  # cfg ends with a pool
        decoder = []
        for k in reversed(range(len(widths))):
            channels = widths[k]
            out = widths[k - 1][-1] if k > 0 else channels[0]
            layers: list[nn.Module] = []
            for _ in channels[:-1]:
                layers += _conv_bn_relu(channels[-1], channels[-1])
            if k > 0:
                layers += _conv_bn_relu(channels[-1], out)
            else:
                layers.append(nn.Conv2d(channels[-1], num_classes, 3, padding=1))
            decoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(decoder)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2], images.shape[-1]
        x = pad_to_multiple(images, self.size_divisor)
        switches = []  # per stage: the pooling indices, or the pre-pool map ("argmax")
        for start, end in self._stages:
            x = self.encoder[start:end](x)
            if self.unpool == "indices":
                x, indices = F.max_pool2d(x, 2, 2, return_indices=True)
                switches.append(indices)
            else:
                switches.append(x)
                x = F.max_pool2d(x, 2, 2)
        for stage in self.decoder:
            x = stage(self._unpool(x, switches.pop()))
        return x[:, :, :height, :width]

    def _unpool(self, x: torch.Tensor, switch: torch.Tensor) -> torch.Tensor:
        if self.unpool == "argmax":
            return unpool_by_argmax(x, switch)
        return F.max_unpool2d(x, switch, (2, 2), (2, 2))


def segnet(num_classes: int = 21, width: float = 1.0, unpool: str = "indices") -> SegNet:
    """SegNet with the VGG16-BN encoder (``width`` scales every layer; ``unpool``: see the module)."""
    return SegNet(num_classes, width, unpool)
