"""The one interface every segbench model implements.

A model is an ``nn.Module`` whose ``forward`` maps a normalised float batch to raw tensors (what gets
exported and what every backend runs), plus two host-side steps that every backend shares so that
timings and metrics always include them:

* ``preprocess``: uint8 RGB images ``[N, H, W, 3]`` -> normalised float32 ``[N, 3, H, W]``;
* ``postprocess``: raw outputs by name and the image size -> the task output (a label map
  ``[N, H, W]`` for semantic).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

# ImageNet statistics: the VGG/ResNet backbones were designed around them and real checkpoints expect them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationModel(nn.Module):
    """Base class: subclasses define ``forward`` and may override ``postprocess``."""

    # Class defaults that a model may set per instance (an ONNX file's names, a multi-task model's task).
    task: str = "semantic"
    input_names: tuple[str, ...] = ("images",)
    output_names: tuple[str, ...] = ("logits",)
    # Spatial sizes the network needs; forward pads to a multiple of this and crops back.
    size_divisor: int = 1
    # Whether one exported graph serves every input size. Networks whose traced graph keeps feature-map
    # sizes as constants (e.g. Python-list spatial shapes in Mask2Former) export one graph per size.
    dynamic_spatial: bool = True
    # Instance/panoptic outputs: class label + this offset = the dataset's category id (the shapes
    # categories are class index + 1; torchvision-style detectors already predict category ids).
    category_offset: ClassVar[int] = 0
    # The ONNX exporter that handles this network: the dynamo exporter by default; detectors whose
    # NMS has a data-dependent size need the TorchScript exporter (torchvision's ONNX symbolics).
    preferred_exporter: ClassVar[str] = "dynamo"
    # Set by whoever builds the model (the registry, module: and onnx: models): what the export cache
    # keys its graph on, with the weights it was built with.
    options: dict[str, Any]
    weights: str

    def __init__(self, num_classes: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self._mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1) * 255.0
        self._inv_std = 1.0 / (np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1) * 255.0)

    def preprocess(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 ``[N, H, W, 3]`` RGB -> ``{"images": float32 [N, 3, H, W]}``, normalised."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected images of shape [N, H, W, 3], got {tuple(images.shape)}")
        batch = images.transpose(0, 3, 1, 2).astype(np.float32)
        batch -= self._mean
        batch *= self._inv_std
        return {self.input_names[0]: np.ascontiguousarray(batch)}

    def postprocess(self, outputs: Mapping[str, np.ndarray], image_size: tuple[int, int]) -> Any:
        """Raw outputs -> task output for images of ``image_size`` (H, W).

        Semantic default: per-pixel argmax of the logits -> int64 label map ``[N, H, W]``. Instance
        models need ``image_size`` to paste their RoI masks into the image.
        """
        return np.argmax(outputs[self.output_names[0]], axis=1)


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad the bottom/right of an NCHW batch so H and W are multiples of ``divisor``.

    Written with shape arithmetic (not Python ints) so exported graphs keep dynamic height/width.
    """
    height, width = x.shape[-2], x.shape[-1]
    pad_h = (divisor - height % divisor) % divisor
    pad_w = (divisor - width % divisor) % divisor
    return nn.functional.pad(x, (0, pad_w, 0, pad_h))
