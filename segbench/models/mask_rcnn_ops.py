"""The static-shape pieces of Mask R-CNN's deploy graph, and the mask paste of its post-processing.

Each replaces a data-dependent step of torchvision's eval-mode post-processing with one that exports to
standard ONNX ops (see :mod:`segbench.models.mask_rcnn` for how they fit together); ``paste_masks`` runs
outside the graph, in ``MaskRCNN.postprocess``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.onnx import symbolic_opset11
from torchvision.ops import nms

# Score of a candidate that was filtered out; every real score (a probability) is above it.
INVALID_SCORE = -1.0
# NMS drops candidates scoring at or below this, i.e. the invalid ones, before comparing boxes.
NMS_SCORE_THRESHOLD = -0.5


class GroupedNMS(torch.autograd.Function):
    """Greedy NMS run independently in each group: boxes ``[G, N, 4]``, scores ``[G, N]`` -> ``[K, 3]``.

    The rows are ``(group, 0, box index)``: the output of ONNX NonMaxSuppression with the groups as its
    batch dimension and one class, which is what ``symbolic`` exports. In PyTorch each group runs
    through ``torchvision.ops.nms``, the kernel torchvision's own post-processing uses.
    """

    @staticmethod
    def forward(
        ctx: Any,
        boxes: Tensor,
        scores: Tensor,
        iou_threshold: float,
        score_threshold: float,
        max_per_group: int,
    ) -> Tensor:
        rows = [boxes.new_zeros((0, 3), dtype=torch.int64)]
        for group in range(boxes.shape[0]):
            candidates = torch.nonzero(scores[group] > score_threshold).squeeze(1)
            if candidates.numel() == 0:
                continue
            kept = nms(boxes[group, candidates], scores[group, candidates], iou_threshold)
            kept = candidates[kept[:max_per_group]]
            group_column = torch.full_like(kept, group)
            rows.append(torch.stack([group_column, torch.zeros_like(kept), kept], dim=1))
        return torch.cat(rows)

    @staticmethod
    def symbolic(
        g: Any,
        boxes: Any,
        scores: Any,
        iou_threshold: float,
        score_threshold: float,
        max_per_group: int,
    ) -> Any:
        # ONNX wants scores as [batch, classes, boxes]; boxes may be given as (x1, y1, x2, y2) because
        # IoU does not change when x and y swap roles (torchvision's own NMS symbolic relies on this).
        return g.op(
            "NonMaxSuppression",
            boxes,
            symbolic_opset11.unsqueeze(g, scores, 1),
            g.op("Constant", value_t=torch.tensor([max_per_group], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32)),
        )


def nms_keep_mask(boxes: Tensor, scores: Tensor, iou_threshold: float, max_per_group: int) -> Tensor:
    """Boolean ``[G, N]``: which boxes NMS keeps in each group (scores <= -0.5 never are)."""
    selected = GroupedNMS.apply(boxes, scores, iou_threshold, NMS_SCORE_THRESHOLD, max_per_group)
    # Scatter the variable-length index list back into a fixed-shape mask (ScatterND in ONNX).
    keep = torch.zeros_like(scores)
    keep[selected[:, 0], selected[:, 2]] = 1.0
    return keep > 0.5


def decode_boxes(deltas: Tensor, references: Tensor, weights: tuple[float, ...], clip: float) -> Tensor:
    """torchvision's ``BoxCoder.decode_single`` on broadcastable ``[..., 4]`` tensors, same arithmetic."""
    widths = references[..., 2] - references[..., 0]
    heights = references[..., 3] - references[..., 1]
    ctr_x = references[..., 0] + 0.5 * widths
    ctr_y = references[..., 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    # Clamped like torchvision so that exp() cannot overflow.
    dw = torch.clamp(deltas[..., 2] / ww, max=clip)
    dh = torch.clamp(deltas[..., 3] / wh, max=clip)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    half_w = 0.5 * (torch.exp(dw) * widths)
    half_h = 0.5 * (torch.exp(dh) * heights)
    return torch.stack(
        (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h), dim=-1
    )


def clip_boxes(boxes: Tensor, height: Tensor | int, width: Tensor | int) -> Tensor:
    """Clamp x to ``[0, width]`` and y to ``[0, height]``; sizes may be traced shape values."""
    h = torch.as_tensor(height, device=boxes.device).to(boxes.dtype)
    w = torch.as_tensor(width, device=boxes.device).to(boxes.dtype)
    x1 = torch.minimum(boxes[..., 0].clamp(min=0), w)
    y1 = torch.minimum(boxes[..., 1].clamp(min=0), h)
    x2 = torch.minimum(boxes[..., 2].clamp(min=0), w)
    y2 = torch.minimum(boxes[..., 3].clamp(min=0), h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def box_sizes(boxes: Tensor) -> tuple[Tensor, Tensor]:
    return boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]


def grid_anchors(feature: Tensor, image: Tensor, cell_anchors: Tensor) -> Tensor:
    """Anchors ``[H*W*A, 4]`` of one level, in torchvision's order (row, column, anchor).

    As in torchvision's ``AnchorGenerator``, the stride is the padded image size // the map size
    (48 rather than 64 for the pool level of a 96-pixel image) and the shifts are integers.
    """
    grid_h, grid_w = feature.shape[-2], feature.shape[-1]
    stride_h = image.shape[-2] // grid_h
    stride_w = image.shape[-1] // grid_w
    shifts_x = torch.arange(grid_w, device=feature.device) * stride_w
    shifts_y = torch.arange(grid_h, device=feature.device) * stride_h
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1).to(cell_anchors.dtype)
    return (shifts[:, None, :] + cell_anchors[None, :, :]).reshape(-1, 4)


def gather_rows(values: Tensor, index: Tensor) -> Tensor:
    """``values[b, index[b, k], :]`` for ``values [B, N, C]`` and ``index [B, K]`` (GatherElements)."""
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))


def paste_masks(masks: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Paste RoI masks ``[K, M, M]`` into images: ``[K, H, W]`` float, one ``grid_sample`` for all K.

    Replicates torchvision's ``paste_masks_in_image``: the mask gets a one-pixel zero border (M+2) and
    the box grows by (M+2)/M around its centre, so mask cells keep their size; the grown box is
    truncated to integers and the mask resized bilinearly (half-pixel centres) to its (w+1, h+1) pixels.
    Sampling the bordered mask at ``2 * (x + 0.5 - x0) / w - 1`` (align_corners=False) is that same
    resize; outside the box the samples only see the zero border, so the rest of the image is 0.
    Memory is ``K * H * W`` grid pairs: chunk the detections for very large images.
    """
    height, width = image_size
    num, size = masks.shape[0], masks.shape[-1]
    if num == 0:
        return masks.new_zeros((0, height, width))
    bordered = F.pad(masks[:, None], (1, 1, 1, 1))
    scale = (size + 2) / size
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    ctr_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    ctr_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    # .to(int64) truncates toward zero, as torchvision's does.
    x0 = (ctr_x - half_w).to(torch.int64)
    x1 = (ctr_x + half_w).to(torch.int64)
    y0 = (ctr_y - half_h).to(torch.int64)
    y1 = (ctr_y + half_h).to(torch.int64)
    box_w = (x1 - x0 + 1).clamp(min=1).to(masks.dtype)
    box_h = (y1 - y0 + 1).clamp(min=1).to(masks.dtype)
    xs = torch.arange(width, dtype=masks.dtype) + 0.5
    ys = torch.arange(height, dtype=masks.dtype) + 0.5
    grid_x = 2 * (xs[None, :] - x0[:, None]) / box_w[:, None] - 1  # [K, W]
    grid_y = 2 * (ys[None, :] - y0[:, None]) / box_h[:, None] - 1  # [K, H]
    grid = torch.stack(
        (grid_x[:, None, :].expand(num, height, width), grid_y[:, :, None].expand(num, height, width)), dim=-1
    )
    return F.grid_sample(bordered, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
