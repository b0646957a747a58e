"""Networks a user might point a ``module:`` entry at (``tests.fakes.user_nets:<factory>``)."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """Two convolutions; with ``divisor``, it refuses inputs whose sides are not multiples of it (as
    encoders with strided stages do)."""

    def __init__(self, classes: int = 6, divisor: int = 1, as_dict: bool = False) -> None:
        super().__init__()
        self.divisor, self.as_dict = divisor, as_dict
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 1))

    def forward(self, x: torch.Tensor):
        if x.shape[-1] % self.divisor or x.shape[-2] % self.divisor:
            raise ValueError(f"input sides must be multiples of {self.divisor}, got {tuple(x.shape[-2:])}")
        out = self.body(x)
        return {"out": out} if self.as_dict else out


def tiny(classes: int = 6, divisor: int = 1, as_dict: bool = False) -> nn.Module:
    return TinyNet(classes, divisor, as_dict)


def flat(classes: int = 6) -> nn.Module:
    """Returns one score vector per image: not a segmentation output."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LazyLinear(classes))


NOT_CALLABLE = 3


class Baked(nn.Module):
    """Pools and upsamples back to the input size read as Python ints: a traced (TorchScript) graph
    keeps the traced size as a constant, so its "dynamic" graph is wrong at every other size."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[2]), int(x.shape[3]))
        return nn.functional.interpolate(nn.functional.avg_pool2d(self.head(x), 2), size=size)


def baked(classes: int = 6) -> nn.Module:
    return Baked(classes)
