"""torchvision's semantic segmentation families: DeepLabV3, FCN (ResNet) and LR-ASPP (MobileNetV3).

The networks are torchvision's own, built with ``weights=None, weights_backbone=None`` so nothing is ever
downloaded. The segbench model holds torchvision's modules under torchvision's names (``backbone``,
``classifier``, ``aux_classifier``), so torchvision's COCO-with-VOC-labels checkpoints load unchanged as
``weights: coco`` when they are already in the torch hub cache (read offline, never fetched), and runs
torchvision's own ``forward``, keeping only the main ``out`` logits (the deploy output). These networks
take any input size: torchvision resizes the logits back to the input size itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torchvision.models import segmentation as tv

from segbench.errors import WeightsError
from segbench.models.base import SegmentationModel

DEEPLABV3 = {
    "resnet50": (tv.deeplabv3_resnet50, tv.DeepLabV3_ResNet50_Weights),
    "resnet101": (tv.deeplabv3_resnet101, tv.DeepLabV3_ResNet101_Weights),
    "mobilenet_v3_large": (tv.deeplabv3_mobilenet_v3_large, tv.DeepLabV3_MobileNet_V3_Large_Weights),
}
FCN = {
    "resnet50": (tv.fcn_resnet50, tv.FCN_ResNet50_Weights),
    "resnet101": (tv.fcn_resnet101, tv.FCN_ResNet101_Weights),
}
LRASPP = {"mobilenet_v3_large": (tv.lraspp_mobilenet_v3_large, tv.LRASPP_MobileNet_V3_Large_Weights)}
# torchvision's published checkpoints: 21 VOC classes, trained on a COCO subset.
COCO_CLASSES = 21


class TorchvisionSegmentation(SegmentationModel):
    """A segbench semantic model around one torchvision segmentation network."""

    def __init__(self, num_classes: int, network: torch.nn.Module) -> None:
        super().__init__(num_classes)
        for name, child in network.named_children():  # torchvision's names: state dicts interchangeable
            setattr(self, name, child)
        if hasattr(network, "aux_classifier"):
            self.aux_classifier = network.aux_classifier  # may be None (no auxiliary head)
        # torchvision's forward, called on this module (it reads only the children set above).
        self._torchvision_forward: Callable[..., Mapping[str, torch.Tensor]] = type(network).forward
        self.library_class = type(network).__name__

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._torchvision_forward(self, images)["out"]


def _build(table: Mapping[str, tuple], backbone: str, **kwargs: Any) -> torch.nn.Module:
    if backbone not in table:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(table)}")
    builder, _ = table[backbone]
    return builder(weights=None, weights_backbone=None, **kwargs)


def deeplabv3_resnet50(
    num_classes: int = 21, backbone: str = "resnet50", aux_loss: bool = False
) -> TorchvisionSegmentation:
    """torchvision DeepLabV3 (Chen et al. 2017: dilated ResNet at stride 8, ASPP with image pooling)."""
    network = _build(DEEPLABV3, backbone, num_classes=num_classes, aux_loss=aux_loss)
    return TorchvisionSegmentation(num_classes, network)


def fcn_resnet50(
    num_classes: int = 21, backbone: str = "resnet50", aux_loss: bool = False
) -> TorchvisionSegmentation:
    """torchvision FCN (Long et al. 2015 head on a dilated ResNet at stride 8)."""
    network = _build(FCN, backbone, num_classes=num_classes, aux_loss=aux_loss)
    return TorchvisionSegmentation(num_classes, network)


def lraspp_mobilenet_v3_large(num_classes: int = 21) -> TorchvisionSegmentation:
    """torchvision LR-ASPP (Howard et al. 2019, MobileNetV3-Large, the 'Searching for MobileNetV3' head)."""
    return TorchvisionSegmentation(num_classes, _build(LRASPP, "mobilenet_v3_large", num_classes=num_classes))


def coco_checkpoint(table: Mapping[str, tuple]) -> Callable[[Mapping[str, Any]], Path]:
    """``weights: coco`` for a family: where torchvision keeps that checkpoint in the torch hub cache.

    Only read offline: a missing file is an error that says where to put it, never a download.
    """

    def path(options: Mapping[str, Any]) -> Path:
        backbone = options.get("backbone", next(iter(table)))
        if backbone not in table or options.get("num_classes", COCO_CLASSES) != COCO_CLASSES:
            raise WeightsError(
                f"torchvision's COCO-VOC weights exist for backbones {', '.join(table)} with num_classes 21"
            )
        if table is not LRASPP and not options.get("aux_loss", False):
            # The published files carry the auxiliary head's weights too; it is not run at deploy.
            raise WeightsError(
                "torchvision's COCO-VOC weights include the auxiliary head: set aux_loss: true"
            )
        weights = table[backbone][1].COCO_WITH_VOC_LABELS_V1
        return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name

    return path
