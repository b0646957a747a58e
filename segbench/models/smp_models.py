"""segmentation-models-pytorch (smp) families: U-Net, LinkNet, DeepLabV3+, PSPNet, U-Net++.

The networks are smp's own, built with ``encoder_weights=None`` (smp never downloads anything then); a
local weights file loads through segbench's usual ``weights: PATH``. smp's top-level modules (``encoder``,
``decoder``, ``segmentation_head``) are held by the segbench model under the same names, so a
``torch.save(smp_model.state_dict())`` file loads unchanged (with ``encoder_depth`` < 5, less the keys of
the ResNet stages smp keeps but never runs, which segbench drops). smp needs H and W divisible by the
encoder's output stride (32 for depth 5): inputs are zero-padded to that multiple and the logits cropped
back, as segbench's other semantic models do, so every input size is served by one dynamic graph.

smp is an optional dependency (``pip install segbench[zoo]``); it is imported when a model is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from segbench.models.base import SegmentationModel, pad_to_multiple

# smp's default U-Net / U-Net++ decoder widths, deepest first; a shallower encoder takes the first ones.
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)


def _smp() -> Any:
    try:
        import segmentation_models_pytorch as smp
    except ImportError as exc:  # reported by the registry as a ConfigError with the model's name
        raise ValueError(
            "segmentation-models-pytorch is not installed; install it with pip install 'segbench[zoo]'"
        ) from exc
    return smp


class SmpModel(SegmentationModel):
    """A segbench semantic model around one smp network (without smp's optional classification head)."""

    def __init__(self, num_classes: int, build: Callable[[Any], Any]) -> None:
        super().__init__(num_classes)
        network = build(_smp())
        # The same child names as smp's model: state dicts are interchangeable.
        self.encoder = network.encoder
        # smp keeps a ResNet encoder's stages beyond encoder_depth although its forward never runs them:
        # drop them, so parameter counts and checkpoints hold only what runs (layer k is stage k + 1).
        depth = getattr(network.encoder, "_depth", 5)
        for k in range(max(depth, 1), 5):
            if isinstance(getattr(self.encoder, f"layer{k}", None), torch.nn.Module):
                delattr(self.encoder, f"layer{k}")
        self.decoder = network.decoder
        self.segmentation_head = network.segmentation_head
        # H and W must be multiples of the encoder's output stride (2 ** depth, or 8/16 when dilated).
        self.size_divisor = int(network.encoder.output_stride)
        self.library_class = type(network).__name__

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2], images.shape[-1]
        # smp's SegmentationModel.forward, with padding instead of its divisibility check.
        features = self.encoder(pad_to_multiple(images, self.size_divisor))
        logits = self.segmentation_head(self.decoder(features))
        return logits[:, :, :height, :width]


def _decoder_channels(channels: Sequence[int] | None, depth: int) -> list[int]:
    chosen = list(channels) if channels is not None else list(DEFAULT_DECODER_CHANNELS[:depth])
    if len(chosen) != depth:
        raise ValueError(f"decoder_channels needs {depth} entries (one per encoder stage), got {chosen}")
    return chosen


def unet_resnet34(
    num_classes: int = 21,
    encoder: str = "resnet34",
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] | None = None,
) -> SmpModel:
    """smp ``Unet`` (Ronneberger et al. 2015 with a ResNet encoder)."""
    channels = _decoder_channels(decoder_channels, encoder_depth)
    return SmpModel(
        num_classes,
        lambda smp: smp.Unet(
            encoder_name=encoder,
            encoder_depth=encoder_depth,
            encoder_weights=None,
            decoder_channels=channels,
            classes=num_classes,
        ),
    )


def unetplusplus_resnet34(
    num_classes: int = 21,
    encoder: str = "resnet34",
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] | None = None,
) -> SmpModel:
    """smp ``UnetPlusPlus`` (Zhou et al. 2018: nested dense skip pathways)."""
    channels = _decoder_channels(decoder_channels, encoder_depth)
    return SmpModel(
        num_classes,
        lambda smp: smp.UnetPlusPlus(
            encoder_name=encoder,
            encoder_depth=encoder_depth,
            encoder_weights=None,
            decoder_channels=channels,
            classes=num_classes,
        ),
    )


def linknet_resnet34(num_classes: int = 21, encoder: str = "resnet34", encoder_depth: int = 5) -> SmpModel:
    """smp ``Linknet`` (Chaurasia and Culurciello 2017: additive skips, light decoder)."""
    return SmpModel(
        num_classes,
        lambda smp: smp.Linknet(
            encoder_name=encoder, encoder_depth=encoder_depth, encoder_weights=None, classes=num_classes
        ),
    )


def deeplabv3plus_resnet50(
    num_classes: int = 21,
    encoder: str = "resnet50",
    encoder_depth: int = 5,
    encoder_output_stride: int = 16,
    decoder_channels: int = 256,
    decoder_atrous_rates: Sequence[int] = (12, 24, 36),
) -> SmpModel:
    """smp ``DeepLabV3Plus`` (Chen et al. 2018: dilated encoder, ASPP, stride-4 low-level skip)."""
    return SmpModel(
        num_classes,
        lambda smp: smp.DeepLabV3Plus(
            encoder_name=encoder,
            encoder_depth=encoder_depth,
            encoder_weights=None,
            encoder_output_stride=encoder_output_stride,
            decoder_channels=decoder_channels,
            decoder_atrous_rates=tuple(decoder_atrous_rates),
            classes=num_classes,
        ),
    )


def pspnet_resnet50(
    num_classes: int = 21,
    encoder: str = "resnet50",
    encoder_depth: int = 3,
    psp_out_channels: int = 512,
) -> SmpModel:
    """smp ``PSPNet`` (Zhao et al. 2017: pyramid pooling over bins 1, 2, 3, 6 at stride 8)."""
    model = SmpModel(
        num_classes,
        lambda smp: smp.PSPNet(
            encoder_name=encoder,
            encoder_weights=None,
            encoder_depth=encoder_depth,
            psp_out_channels=psp_out_channels,
            classes=num_classes,
            upsampling=2**encoder_depth,
        ),
    )
    # Its bins pool a map of any size to 1, 2, 3 and 6 cells: ONNX has no adaptive pooling, so the
    # exported window bounds are those of the traced size (wrong or failing elsewhere): one graph per size.
    model.dynamic_spatial = False
    return model
