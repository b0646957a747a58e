"""Any torch module as a segbench model, named by import path in the YAML (no plugin file).

``{module: "mypkg.nets:build", options: {...}, task: semantic, num_classes: 21}`` builds
``mypkg.nets.build(**options)`` and wraps it: preprocessing is declared (mean / std, channel order, the
input size divisor, padded and cropped back here so every backend and the parity check see the same
thing), postprocessing is the task's default (argmax for semantic). The wrapped network is exported,
timed and checked like any registry model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segbench.errors import ConfigError
from segbench.models.base import IMAGENET_MEAN, IMAGENET_STD, SegmentationModel, pad_to_multiple
from segbench.models.weights import RANDOM

TASKS = ("semantic",)  # tasks whose postprocessing segbench can supply for an arbitrary network


def import_factory(path: str) -> Callable[..., nn.Module]:
    """``package.module:attribute`` -> the callable; ConfigError naming what failed."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"module: expected 'package.module:factory', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import error inside the user's package is theirs to see, in one line
        raise ConfigError(f"module: cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    factory: object = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ConfigError(f"module: {module_name} has no {attribute}")
    if not callable(factory):
        raise ConfigError(f"module: {path} is not callable")
    return factory


def _logits(raw: Any) -> torch.Tensor:
    """The class scores of a network's output: a tensor, a dict's ``out`` (torchvision), or the first
    element of a tuple."""
    if isinstance(raw, Mapping):
        raw = raw.get("out", next(iter(raw.values())))
    if isinstance(raw, list | tuple):
        raw = raw[0]
    if not isinstance(raw, torch.Tensor):
        raise TypeError(f"the network returned {type(raw).__name__}, not a tensor")
    return raw


class ImportedModel(SegmentationModel):
    """A user's network behind segbench's pre- and postprocessing."""

    def __init__(
        self,
        network: nn.Module,
        num_classes: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        size_divisor: int = 1,
        channel_order: str = "rgb",
    ) -> None:
        super().__init__(num_classes, mean, std)
        self.network = network
        self.size_divisor = size_divisor  # per instance: the class default is 1
        self.bgr = channel_order == "bgr"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2], images.shape[-1]
        logits = _logits(self.network(pad_to_multiple(images, self.size_divisor)))
        return logits[..., :height, :width]

    def preprocess(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self.bgr:
            images = images[..., ::-1]
        return super().preprocess(images)


def build_imported_model(
    path: str,
    options: Mapping[str, Any],
    num_classes: int,
    preprocess: Mapping[str, Any],
    weights: str = RANDOM,
    seed: int = 0,
) -> ImportedModel:
    """Build ``path``'s network with ``options`` (seeded), load ``weights`` (a safetensors or torch state
    dict file, read without pickles) and wrap it."""
    factory = import_factory(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            network = factory(**options)
        except TypeError as exc:
            raise ConfigError(f"module: {path}(**options) failed: {exc}") from None
    if not isinstance(network, nn.Module):
        raise ConfigError(f"module: {path} returned {type(network).__name__}, not a torch nn.Module")
    if weights != RANDOM:
        network.load_state_dict(_state_dict(Path(weights)))
    model = ImportedModel(network.eval(), num_classes, **preprocess).eval()
    # What the export cache keys the graph on (with the weights' digest), as build_model sets them.
    model.options = {"module": path, "options": dict(options), "num_classes": num_classes,
                     "preprocess": dict(preprocess)}  # fmt: skip
    model.weights = weights
    return model


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def probe(model: ImportedModel, path: str, task: str) -> None:
    """One forward at a small size: the output must be ``[N, num_classes, H, W]`` for a semantic model.
    Raises ConfigError naming what came back."""
    if task not in TASKS:
        raise ConfigError(f"module: {path}: task {task!r} needs its own postprocessing; write a plugin "
                          f"model for it (tasks segbench post-processes: {', '.join(TASKS)})")  # fmt: skip
    side = 2 * model.size_divisor if model.size_divisor > 1 else 64
    size = (side, side + model.size_divisor if model.size_divisor > 1 else side + 16)
    with torch.no_grad():
        try:
            out = model(torch.zeros(1, 3, *size))
        except Exception as exc:
            raise ConfigError(f"module: {path} fails on a 1x3x{size[0]}x{size[1]} input: "
                              f"{type(exc).__name__}: {exc}") from None  # fmt: skip
    expected = (1, model.num_classes, *size)
    if tuple(out.shape) != expected:
        raise ConfigError(
            f"module: {path} returned shape {list(out.shape)} for a 1x3x{size[0]}x{size[1]} input; a "
            f"semantic model must return [N, num_classes={model.num_classes}, H, W] class scores"
        )


def imported_stats(model: ImportedModel, height: int, width: int) -> dict[str, Any]:
    """Parameters and GFLOPs of one forward at ``height`` x ``width`` (counted on a real forward: a
    user's network may not run on the meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, height, width))
    return {"params": sum(p.numel() for p in model.parameters()), "gflops": counter.get_total_flops() / 1e9}
