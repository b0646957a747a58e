"""Mask R-CNN (He, Gkioxari, Dollár and Girshick, ICCV 2017) on a ResNet-FPN backbone, in two forms.

Both forms share one set of modules: torchvision's own ``backbone``, ``rpn`` and ``roi_heads``, so the
parameter names are torchvision's and its COCO checkpoints load unchanged.

* ``reference()`` is torchvision's ``MaskRCNN`` around those modules, with resizing and renormalisation
  switched off: the accuracy reference.
* ``forward`` is the deploy form. It re-implements torchvision's eval-mode post-processing with static
  shapes so that the whole network exports to ONNX with standard ops (TopK, Gather, NonMaxSuppression,
  RoiAlign, ScatterND) that ONNX Runtime and TensorRT's ONNX parser accept, and returns a fixed number
  of detections per image, zero-padded, plus a valid count. Masks leave the graph at RoI resolution
  (28x28); ``postprocess`` pastes them into the image outside the graph with one ``grid_sample`` call.

How each data-dependent step of torchvision is made static:

* RPN pre-NMS top-k: each level's objectness is padded with ``pre_nms_top_n`` entries of -inf so that
  TopK's K is the same constant for every level and input size; picks that land on the padding are
  marked invalid.
* Filtering (small boxes, score threshold): nothing is removed; failing candidates get the score -1,
  below every real score and below the NMS score threshold.
* NMS: one ONNX NonMaxSuppression per stage whose batch dimension is the NMS group ((image, FPN level)
  for the RPN, (image, class) for the box head), so groups never interact and no coordinate offsets
  are needed. Its data-dependent list of kept indices is turned back into a fixed-shape keep mask with
  ScatterND; the graph's outputs never depend on how many boxes survived.
* Post-NMS top-n / detections per image: TopK over the masked scores (-1 where not kept).
* Multi-level RoIAlign: one RoiAlign per FPN level over all boxes, then each box takes its own level's
  result with a chain of Where ops. Static, at 4x the RoIAlign work (cheap next to the box head).
* Mask head: run on the fixed set of detection slots; the predicted class's 28x28 logits are gathered.

The static ops (grouped NMS, box decoding, anchors) and ``paste_masks`` are in
:mod:`segbench.models.mask_rcnn_ops`; this module holds the network and its constructor.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.models.detection import (
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
    maskrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from segbench.errors import WeightsError
from segbench.models.base import SegmentationModel, pad_to_multiple
from segbench.models.mask_rcnn_ops import (
    INVALID_SCORE,
    NMS_SCORE_THRESHOLD,
    box_sizes,
    clip_boxes,
    decode_boxes,
    gather_rows,
    grid_anchors,
    nms_keep_mask,
    paste_masks,
)

BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50")
VERSIONS = (1, 2)
# Strides of the FPN maps "0".."3" that the RoI heads pool from (ResNet layer1..layer4).
_FPN_STRIDES = {"0": 4, "1": 8, "2": 16, "3": 32}
# torchvision.models.detection.roi_heads.RoIHeads.postprocess_detections drops boxes below this size.
_MIN_DETECTION_SIZE = 1e-2


class _UnresizedTransform(GeneralizedRCNNTransform):
    """torchvision's input transform without the resize, so the reference sees the deploy input as is.

    Mean 0 / std 1 make its normalisation the identity; batching still pads to a multiple of 32, which
    is exactly what the deploy forward does.
    """

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        return image, target


class MaskRCNN(SegmentationModel):
    """Mask R-CNN whose ``forward`` is the static-shape deploy graph; see the module docstring.

    Inputs are ``[N, 3, H, W]`` normalised images (``preprocess``). Outputs: ``boxes [N, D, 4]``
    (x1, y1, x2, y2 in input pixels), ``scores [N, D]``, ``labels [N, D]`` (0 = padding),
    ``masks [N, D, 28, 28]`` (probabilities of the predicted class inside the box) and
    ``num_detections [N]``, detections sorted by descending score, ``D = max_detections``.

    Known divergence from torchvision: RoI pooling uses the FPN strides 4..32. torchvision infers them
    from the first image it sees, and gets the same values whenever padding to 32 grows the image
    height by less than a factor sqrt(2), i.e. for every height >= 68 pixels.
    """

    task = "instance"
    input_names = ("images",)
    output_names = ("boxes", "scores", "labels", "masks", "num_detections")
    size_divisor = 32
    # The dynamo exporter fails on the data-dependent NMS; torchvision's TorchScript symbolics export it.
    preferred_exporter = "torchscript"

    def __init__(self, detector: TorchvisionMaskRCNN) -> None:
        predictor = detector.roi_heads.box_predictor
        super().__init__(predictor.cls_score.out_features)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + objects), got {self.num_classes}")
        heads = detector.roi_heads
        for pool in (heads.box_roi_pool, heads.mask_roi_pool):
            # The static level assignment assumes torchvision's default pools: FPN strides 4, 8, 16, 32.
            if not isinstance(pool, MultiScaleRoIAlign) or list(pool.featmap_names) != list(_FPN_STRIDES):
                raise ValueError(
                    "the RoI pools must be MultiScaleRoIAlign over the FPN maps '0', '1', '2', '3'"
                )
        post_nms = detector.rpn._post_nms_top_n["testing"]
        if heads.detections_per_img > (self.num_classes - 1) * post_nms:
            raise ValueError(
                f"max_detections ({heads.detections_per_img}) cannot exceed (num_classes - 1) * "
                f"{post_nms} proposals = {(self.num_classes - 1) * post_nms}"
            )
        # torchvision's own modules, registered here under torchvision's names (backbone.*, rpn.*,
        # roi_heads.*), so its checkpoints load unchanged.
        self.backbone = detector.backbone
        self.rpn = detector.rpn
        self.roi_heads = detector.roi_heads
        detector.transform = _UnresizedTransform(
            min_size=1, max_size=1, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0], size_divisible=32
        )
        # The full torchvision model stays reachable for reference() without registering it as a
        # submodule: its parameters are the ones above, and registering it would list them twice.
        self.__dict__["_detector"] = detector
        self.max_detections = heads.detections_per_img
        mask_pool_size = heads.mask_roi_pool.output_size[0]
        # MaskRCNNPredictor upsamples the pooled 14x14 features 2x (transposed conv) to 28x28.
        self.mask_size = mask_pool_size * heads.mask_predictor.conv5_mask.stride[0]

    def reference(self) -> nn.Module:
        """torchvision's ``MaskRCNN`` over this model's modules: input a list of normalised ``[3, H, W]``.

        It neither resizes nor renormalises, so in eval mode it returns torchvision's detections for the
        same input the deploy forward sees (boxes in input pixels, masks pasted at ``[k, 1, H, W]``).
        Its RoI pools cache the FPN scales inferred from the first image they see (torchvision
        behaviour).
        """
        detector = self.__dict__["_detector"]
        # Only the wrapper and the transform are not shared with this model; follow its mode.
        detector.training = self.training
        detector.transform.training = self.training
        return detector

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        height, width = images.shape[-2], images.shape[-1]
        padded = pad_to_multiple(images, self.size_divisor)
        features = self.backbone(padded)
        proposals, proposal_valid = self._proposals(padded, list(features.values()), height, width)
        boxes, scores, labels, valid = self._detections(features, proposals, proposal_valid, height, width)
        masks = self._masks(features, boxes, labels, valid)
        num_detections = valid.to(torch.int64).sum(dim=1)
        # Reshapes to constant shapes, last, so that ONNX shape inference sees the static D (and 4, 28).
        d, size = self.max_detections, self.mask_size
        return (
            boxes.reshape(-1, d, 4),
            scores.reshape(-1, d),
            labels.reshape(-1, d),
            masks.reshape(-1, d, size, size),
            num_detections,
        )

    def _proposals(
        self, padded: Tensor, features: list[Tensor], height: Tensor | int, width: Tensor | int
    ) -> tuple[Tensor, Tensor]:
        """RPN: ``[B, post_nms_top_n, 4]`` proposals sorted by objectness, and their validity."""
        rpn = self.rpn
        pre_nms = rpn._pre_nms_top_n["testing"]
        post_nms = rpn._post_nms_top_n["testing"]
        objectness, deltas = rpn.head(features)
        cell_anchors = rpn.anchor_generator.cell_anchors
        level_boxes, level_scores = [], []
        for feature, logits, regression, cells in zip(
            features, objectness, deltas, cell_anchors, strict=True
        ):
            anchors = grid_anchors(feature, padded, cells.to(feature.device, feature.dtype))
            # [B, A, H, W] -> [B, H*W*A]: torchvision's (row, column, anchor) order.
            logits = logits.permute(0, 2, 3, 1).reshape(logits.shape[0], -1)
            regression = regression.permute(0, 2, 3, 1).reshape(logits.shape[0], -1, 4)
            count = logits.shape[1]
            # Pad with -inf so that K is the constant pre_nms for every level and image size.
            top_logits, index = F.pad(logits, (0, pre_nms), value=float("-inf")).topk(pre_nms, dim=1)
            valid = index < count
            index = torch.where(valid, index, 0)
            boxes = decode_boxes(
                gather_rows(regression, index),
                anchors[index],
                rpn.box_coder.weights,
                rpn.box_coder.bbox_xform_clip,
            )
            boxes = clip_boxes(boxes, height, width)
            scores = torch.sigmoid(top_logits)
            box_w, box_h = box_sizes(boxes)
            valid = valid & (box_w >= rpn.min_size) & (box_h >= rpn.min_size) & (scores >= rpn.score_thresh)
            level_boxes.append(boxes)
            level_scores.append(torch.where(valid, scores, INVALID_SCORE))
        boxes = torch.stack(level_boxes, dim=1)  # [B, L, pre_nms, 4]
        scores = torch.stack(level_scores, dim=1)  # [B, L, pre_nms]
        num_levels = len(level_boxes)
        # NMS per (image, level); no level can contribute more than post_nms proposals to the top post_nms.
        keep = nms_keep_mask(
            boxes.reshape(-1, pre_nms, 4), scores.reshape(-1, pre_nms), rpn.nms_thresh, post_nms
        )
        ranked = torch.where(keep, scores.reshape(-1, pre_nms), INVALID_SCORE).reshape(
            -1, num_levels * pre_nms
        )
        top_scores, index = ranked.topk(min(post_nms, num_levels * pre_nms), dim=1)
        proposals = gather_rows(boxes.reshape(-1, num_levels * pre_nms, 4), index)
        return proposals, top_scores > NMS_SCORE_THRESHOLD

    def _pool(self, pool: MultiScaleRoIAlign, features: Mapping[str, Tensor], boxes: Tensor) -> Tensor:
        """torchvision's ``MultiScaleRoIAlign`` for boxes ``[B, R, 4]`` -> ``[B*R, C, S, S]``, statically.

        Every level pools every box (4x the RoIAlign work) and each box then takes its own level's result
        (FPN paper eq. 1, torchvision's ``LevelMapper``), so no box list has a data-dependent length.
        """
        image_index = torch.arange(boxes.shape[0], device=boxes.device).to(boxes.dtype)
        rois = torch.cat((torch.zeros_like(boxes[..., :1]) + image_index[:, None, None], boxes), dim=2)
        rois = rois.reshape(-1, 5)
        strides = [_FPN_STRIDES[name] for name in pool.featmap_names]
        level_min = int(np.log2(strides[0]))
        box_w, box_h = box_sizes(rois[:, 1:])
        # As torchvision: floor(4 + log2(sqrt(area) / 224) + 1e-6), clamped to the available levels.
        # Padding slots have zero area: log2(0) = -inf, which the clamp maps to the finest level.
        scale = torch.sqrt(box_w * box_h)
        target = torch.floor(pool.canonical_level + torch.log2(scale / pool.canonical_scale) + 1e-6)
        level = torch.clamp(target, min=level_min, max=level_min + len(strides) - 1) - level_min
        level = level.reshape(-1, 1, 1, 1)
        pooled = None
        for k, (name, stride) in enumerate(zip(pool.featmap_names, strides, strict=True)):
            out = roi_align(
                features[name],
                rois,
                pool.output_size,
                spatial_scale=1.0 / stride,
                sampling_ratio=pool.sampling_ratio,
                aligned=False,
            )
            pooled = out if pooled is None else torch.where(level == k, out, pooled)
        assert pooled is not None, "the RoI pooler has no feature map"
        return pooled

    def _detections(
        self,
        features: Mapping[str, Tensor],
        proposals: Tensor,
        proposal_valid: Tensor,
        height: Tensor | int,
        width: Tensor | int,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Box head + per-class NMS: the top ``max_detections`` detections per image, zero-padded."""
        heads = self.roi_heads
        num_proposals = proposals.shape[1]
        num_fg = self.num_classes - 1
        box_features = heads.box_head(self._pool(heads.box_roi_pool, features, proposals))
        class_logits, regression = heads.box_predictor(box_features)
        coder = heads.box_coder
        boxes = decode_boxes(
            regression.reshape(-1, self.num_classes, 4),
            proposals.reshape(-1, 1, 4),
            coder.weights,
            coder.bbox_xform_clip,
        )
        # Drop the background column; [B, P, C-1, ...].
        boxes = clip_boxes(boxes, height, width).reshape(-1, num_proposals, self.num_classes, 4)[:, :, 1:]
        scores = F.softmax(class_logits, dim=-1).reshape(-1, num_proposals, self.num_classes)[:, :, 1:]
        box_w, box_h = box_sizes(boxes)
        valid = (
            proposal_valid[..., None]
            & (scores > heads.score_thresh)
            & (box_w >= _MIN_DETECTION_SIZE)
            & (box_h >= _MIN_DETECTION_SIZE)
        )
        # NMS groups are (image, class): [B*(C-1), P, ...].
        group_boxes = boxes.permute(0, 2, 1, 3).reshape(-1, num_proposals, 4)
        group_scores = torch.where(valid, scores, INVALID_SCORE).permute(0, 2, 1).reshape(-1, num_proposals)
        # At most max_detections per class can make the image's top max_detections.
        keep = nms_keep_mask(group_boxes, group_scores, heads.nms_thresh, self.max_detections)
        ranked = torch.where(keep, group_scores, INVALID_SCORE).reshape(-1, num_fg * num_proposals)
        top_scores, index = ranked.topk(self.max_detections, dim=1)
        valid = top_scores > NMS_SCORE_THRESHOLD
        det_boxes = gather_rows(group_boxes.reshape(-1, num_fg * num_proposals, 4), index)
        det_boxes = torch.where(valid[..., None], det_boxes, 0.0)
        det_scores = torch.where(valid, top_scores, 0.0)
        # index = class * P + proposal; indices are >= 0, so truncating division is floor division and
        # exports as a plain integer Div.
        det_labels = torch.where(valid, torch.div(index, num_proposals, rounding_mode="trunc") + 1, 0)
        return det_boxes, det_scores, det_labels, valid

    def _masks(self, features: Mapping[str, Tensor], boxes: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
        """Mask head on every detection slot: ``[B, D, 28, 28]`` probabilities of the predicted class."""
        heads = self.roi_heads
        mask_logits = heads.mask_predictor(heads.mask_head(self._pool(heads.mask_roi_pool, features, boxes)))
        size = self.mask_size
        index = labels.reshape(-1, 1, 1, 1).expand(-1, 1, size, size)
        masks = mask_logits.gather(1, index).sigmoid().reshape(-1, self.max_detections, size, size)
        return torch.where(valid[..., None, None], masks, 0.0)

    def postprocess(
        self, outputs: Mapping[str, np.ndarray], image_size: tuple[int, int]
    ) -> list[dict[str, np.ndarray]]:
        """Raw outputs -> one dict per image: ``boxes [k, 4]``, ``scores [k]``, ``labels [k]`` and
        ``masks [k, H, W]`` (bool), the RoI masks pasted into the image and thresholded at 0.5."""
        boxes = torch.as_tensor(np.asarray(outputs["boxes"]), dtype=torch.float32)
        scores = torch.as_tensor(np.asarray(outputs["scores"]), dtype=torch.float32)
        labels = torch.as_tensor(np.asarray(outputs["labels"])).to(torch.int64)
        masks = torch.as_tensor(np.asarray(outputs["masks"]), dtype=torch.float32)
        counts = torch.as_tensor(np.asarray(outputs["num_detections"])).to(torch.int64).reshape(-1)
        slots = torch.arange(boxes.shape[1])[None, :] < counts[:, None]
        pasted = paste_masks(masks[slots], boxes[slots], image_size) >= 0.5
        sizes = counts.tolist()
        results = []
        for image, (b, s, lab, m) in enumerate(zip(boxes, scores, labels, pasted.split(sizes), strict=True)):
            k = sizes[image]
            results.append(
                {
                    "boxes": b[:k].numpy(),
                    "scores": s[:k].numpy(),
                    "labels": lab[:k].numpy(),
                    "masks": m.numpy(),
                }
            )
        return results


def torchvision_coco_checkpoint(options: Mapping[str, Any]) -> Path:
    """Where torchvision keeps its COCO checkpoint for these options: the torch hub cache, read offline."""
    if options.get("backbone", "resnet50") != "resnet50" or options.get("num_classes", 91) != 91:
        raise WeightsError("torchvision's COCO weights are for backbone resnet50 with num_classes 91")
    weights = (
        MaskRCNN_ResNet50_FPN_Weights if options.get("version", 1) == 1 else MaskRCNN_ResNet50_FPN_V2_Weights
    )
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.COCO_V1.url).name


def _small_backbone(name: str, fpn_channels: int) -> BackboneWithFPN:
    """A ResNet-FPN backbone with trainable batch norm, for training from scratch.

    torchvision's ``resnet_fpn_backbone`` freezes batch norm, which suits ImageNet-initialised bodies but
    leaves a randomly initialised one without normalisation. ``resnet10`` (one basic block per stage)
    keeps the shipped checkpoint small.
    """
    body = (
        ResNet(BasicBlock, [1, 1, 1, 1], norm_layer=nn.BatchNorm2d)
        if name == "resnet10"
        else getattr(torchvision.models, name)(weights=None, norm_layer=nn.BatchNorm2d)
    )
    return BackboneWithFPN(
        body,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[64, 128, 256, 512],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def mask_rcnn(
    num_classes: int = 91,
    backbone: str = "resnet50",
    version: int = 1,
    max_detections: int = 100,
    fpn_channels: int = 256,
    representation_size: int = 1024,
    mask_channels: int = 256,
) -> MaskRCNN:
    """Mask R-CNN with a ResNet-FPN backbone, random weights; ``num_classes`` includes background.

    ``resnet50`` + version 1 is torchvision's ``maskrcnn_resnet50_fpn``, version 2 its
    ``maskrcnn_resnet50_fpn_v2`` (exactly, so torchvision's COCO checkpoints load). ``resnet10``/``18``/``34``
    are ResNet-FPN bodies with trainable batch norm and the version 1 heads, whose widths
    (``fpn_channels``, ``representation_size`` of the box head, ``mask_channels``) can be reduced for small
    CPU-trained checkpoints. Nothing is downloaded: load checkpoints through segbench's weights loader.

    The resnet50 models use ``BatchNorm2d`` (eps 1e-5), as torchvision builds them without weights.
    torchvision runs its ``COCO_V1`` checkpoint with frozen batch norm at eps 0; to reproduce those
    numbers exactly, set ``eps = 0.0`` on the backbone's batch-norm layers after loading it.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if version not in VERSIONS:
        raise ValueError(f"version must be 1 or 2, got {version!r}")
    if version == 2 and backbone != "resnet50":
        raise ValueError(f"version 2 (maskrcnn_resnet50_fpn_v2) exists only for resnet50, not {backbone!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (background + objects), got {num_classes!r}")
    if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1:
        raise ValueError(f"max_detections must be an int >= 1, got {max_detections!r}")
    widths = {
        "fpn_channels": fpn_channels,
        "representation_size": representation_size,
        "mask_channels": mask_channels,
    }
    bad = [f"{k}={v!r}" for k, v in widths.items() if isinstance(v, bool) or not isinstance(v, int) or v < 8]
    if bad:
        raise ValueError(f"head widths must be ints >= 8, got {', '.join(bad)}")
    options = {"num_classes": num_classes, "box_detections_per_img": max_detections}
    if backbone == "resnet50":
        if (fpn_channels, representation_size, mask_channels) != (256, 1024, 256):
            raise ValueError(
                "resnet50 keeps torchvision's head widths (256/1024/256) so its checkpoints load"
            )
        builder = maskrcnn_resnet50_fpn if version == 1 else maskrcnn_resnet50_fpn_v2
        detector = builder(weights=None, weights_backbone=None, **options)
    else:
        detector = TorchvisionMaskRCNN(
            _small_backbone(backbone, fpn_channels),
            box_head=TwoMLPHead(fpn_channels * 7 * 7, representation_size),
            box_predictor=FastRCNNPredictor(representation_size, num_classes),
            mask_head=MaskRCNNHeads(fpn_channels, (mask_channels,) * 4, 1),
            mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes),
            # torchvision wants num_classes only when it builds the predictors itself.
            num_classes=None,
            box_detections_per_img=max_detections,
        )
    return MaskRCNN(detector)
