"""Mask2Former (Cheng et al., CVPR 2022) through transformers' ``Mask2FormerForUniversalSegmentation``.

The network (backbone, multi-scale deformable-attention pixel decoder, masked-attention transformer
decoder) is transformers' own; segbench adds the shared interface: ``forward`` returns the raw class and
mask logits (what is exported and what every backend runs), and ``postprocess`` turns them into panoptic,
instance or semantic output with transformers' image-processor post-processing, the same for every backend.

The parameter names are transformers' (``model.*``, ``class_predictor.*``), so a checkpoint file saved by
``Mask2FormerForUniversalSegmentation.save_pretrained`` loads as segbench weights.

Export: transformers keeps the feature maps' spatial shapes as Python lists, so a traced graph bakes them
in. With dynamic height/width the legacy exporter then produces a graph that is silently wrong at other
sizes, and the dynamo exporter specialises the sizes. ``dynamic_spatial = False`` makes segbench export one
graph per input size (with a dynamic batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segbench.models.base import SegmentationModel

# transformers is imported where it is used: importing it takes seconds, and every segbench process
# imports this module through the model registry, most of them never building a Mask2Former.
if TYPE_CHECKING:
    from transformers import Mask2FormerConfig, ResNetConfig, SwinConfig

TASKS = ("panoptic", "instance", "semantic")
BACKBONES = ("swin-t", "resnet50", "resnet18", "resnet-tiny")
_STAGES = ["stage1", "stage2", "stage3", "stage4"]
# transformers' configs take keyword arguments beyond their dataclass fields (out_features, num_labels,
# use_timm_backbone, ...) in __post_init__, but their typed __init__ lists the fields only: hence the
# "type: ignore[call-arg]  # extra kwargs" on the calls below.


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers warns that non-Swin backbones "may not be compatible"; segbench's tests run the
    ResNet configs end to end, so on every model build the warning would only be noise."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def backbone_config(name: str) -> SwinConfig | ResNetConfig:
    """transformers backbone configs matching the published Mask2Former variants (and a light ResNet-18)."""
    from transformers import ResNetConfig, SwinConfig

    if name == "swin-t":
        return SwinConfig(  # type: ignore[call-arg]  # extra kwargs
            embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7, out_features=_STAGES
        )
    if name == "resnet50":
        return ResNetConfig(  # type: ignore[call-arg]  # extra kwargs
            depths=[3, 4, 6, 3],
            hidden_sizes=[256, 512, 1024, 2048],
            layer_type="bottleneck",
            out_features=_STAGES,
        )
    if name == "resnet18":
        return ResNetConfig(  # type: ignore[call-arg]  # extra kwargs
            depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic", out_features=_STAGES
        )
    if name == "resnet-tiny":
        # segbench's own light backbone for checkpoints trained on a CPU: one basic block per stage.
        return ResNetConfig(  # type: ignore[call-arg]  # extra kwargs
            depths=[1, 1, 1, 1], hidden_sizes=[32, 64, 128, 256], embedding_size=32, layer_type="basic",
            out_features=_STAGES,
        )  # fmt: skip
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


class Mask2Former(SegmentationModel):
    output_names = ("class_logits", "mask_logits")
    dynamic_spatial = False
    # Class indices 0..C-1; the shapes categories (and COCO-style JSON written by segbench) are 1..C.
    category_offset = 1

    def __init__(
        self, config: Mask2FormerConfig, task: str = "panoptic", stuff_classes: tuple[int, ...] = ()
    ) -> None:
        from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

        num_labels = config.num_labels
        assert num_labels is not None, "transformers gives every config its labels (id2label)"
        super().__init__(num_labels)
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        bad = [c for c in stuff_classes if not 0 <= c < num_labels]
        if bad:
            raise ValueError(f"stuff class {bad[0]} is outside [0, {num_labels})")
        with _quiet_transformers():
            network = Mask2FormerForUniversalSegmentation(config)
        # Register transformers' own submodules under their own names so checkpoints load unchanged;
        # keep the wrapper object itself out of the module tree (a tuple is not registered).
        self.model = network.model
        self.class_predictor = network.class_predictor
        self.criterion = network.criterion
        self._network = (network,)
        self.task = task
        self.stuff_classes = tuple(stuff_classes)
        self._processor = Mask2FormerImageProcessor()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._network[0](pixel_values=images)
        return out.class_queries_logits, out.masks_queries_logits

    def postprocess(self, outputs: Mapping[str, np.ndarray], image_size: tuple[int, int]) -> list[Any]:
        """Per image: panoptic ``(id_map, segments)``, instance ``(masks, labels, scores)`` or a label map.

        Panoptic id maps use 0 for pixels no segment claims (void in COCO terms); segments carry
        ``id``, ``category_id`` (the class index), ``score`` and ``isthing``.
        """
        raw = SimpleNamespace(
            class_queries_logits=torch.from_numpy(np.ascontiguousarray(outputs["class_logits"])),
            masks_queries_logits=torch.from_numpy(np.ascontiguousarray(outputs["mask_logits"])),
        )
        height, width = image_size
        sizes = [(height, width)] * raw.class_queries_logits.shape[0]
        if self.task == "semantic":
            maps = self._processor.post_process_semantic_segmentation(raw, target_sizes=sizes)
            return [m.numpy().astype(np.int64) for m in maps]
        if self.task == "instance":
            results = self._processor.post_process_instance_segmentation(
                raw, target_sizes=sizes, return_binary_maps=True
            )
            return [_instances(r, image_size) for r in results]
        results = self._processor.post_process_panoptic_segmentation(
            raw, label_ids_to_fuse=set(self.stuff_classes), target_sizes=sizes
        )
        return [_panoptic(r, self.stuff_classes) for r in results]


def _panoptic(result: dict, stuff_classes: tuple[int, ...]) -> tuple[np.ndarray, list[dict]]:
    # transformers marks "no segment at all" with -1 and unclaimed pixels with 0; both are void here.
    id_map = np.maximum(result["segmentation"].numpy().astype(np.int32), 0)
    segments = [
        {
            "id": int(s["id"]),
            "category_id": int(s["label_id"]),
            "score": float(s["score"]),
            "isthing": int(s["label_id"]) not in stuff_classes,
        }
        for s in result["segments_info"]
    ]
    return id_map, segments


def _instances(result: dict, image_size: tuple[int, int]) -> dict[str, np.ndarray]:
    info = result["segments_info"]
    if not info:
        return {
            "masks": np.zeros((0, *image_size), bool),
            "labels": np.zeros(0, np.int64),
            "scores": np.zeros(0, np.float32),
        }
    return {
        "masks": result["segmentation"].numpy().astype(bool).reshape(len(info), *image_size),
        "labels": np.array([s["label_id"] for s in info], np.int64),
        "scores": np.array([s["score"] for s in info], np.float32),
    }


def mask2former(
    num_classes: int = 133,
    backbone: str = "swin-t",
    num_queries: int = 100,
    hidden_dim: int = 256,
    encoder_layers: int = 6,
    decoder_layers: int = 10,
    task: str = "panoptic",
    stuff_classes: tuple[int, ...] | list[int] = (),
    config: str | None = None,
) -> Mask2Former:
    """Mask2Former with transformers' defaults (Swin-T, 100 queries, 256-d) unless told otherwise.

    ``stuff_classes`` are the class indices fused into one segment per class in panoptic output.
    ``config``: a local ``save_pretrained`` directory (or its config.json) of an official checkpoint; its
    architecture then replaces the size options, so its ``model.safetensors`` loads as the weights.
    """
    from transformers import Mask2FormerConfig

    if config is not None:
        # from_pretrained would fall back to a default config for a folder without config.json.
        config_file = Path(config) / "config.json" if Path(config).is_dir() else Path(config)
        if not config_file.is_file():
            raise ValueError(f"cannot read a Mask2Former config from {config}: no {config_file}")
        with _quiet_transformers():
            try:
                loaded = Mask2FormerConfig.from_pretrained(config, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read a Mask2Former config from {config}: {exc}") from None
        return Mask2Former(loaded, task=task, stuff_classes=tuple(stuff_classes))
    if num_queries < 1 or encoder_layers < 1 or decoder_layers < 2:
        raise ValueError("num_queries >= 1, encoder_layers >= 1 and decoder_layers >= 2 are needed")
    if hidden_dim < 32 or hidden_dim % 32:
        raise ValueError(
            f"hidden_dim must be a positive multiple of 32 (GroupNorm uses 32 groups), got {hidden_dim}"
        )
    with _quiet_transformers():
        built = Mask2FormerConfig(  # type: ignore[call-arg]  # extra kwargs
            backbone_config=backbone_config(backbone),
            num_labels=num_classes,
            num_queries=num_queries,
            hidden_dim=hidden_dim,
            mask_feature_size=hidden_dim,
            feature_size=hidden_dim,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            dim_feedforward=4 * hidden_dim,
            encoder_feedforward_dim=4 * hidden_dim,
            use_timm_backbone=False,
            use_pretrained_backbone=False,
        )
    return Mask2Former(built, task=task, stuff_classes=tuple(stuff_classes))
