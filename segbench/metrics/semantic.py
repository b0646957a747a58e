"""Semantic-segmentation metrics from a confusion matrix: mIoU, pixel accuracy, mean Dice.

Written here rather than taken from torchmetrics to avoid a heavy dependency for a few lines, and to
pin down the conventions the numerics checker relies on: pixels labelled ``ignore_index`` are left out,
and a class that appears in neither the ground truth nor the predictions is left out of the class means
(as in mmsegmentation's and the Cityscapes scripts' nan-mean), instead of counting as 0 or 1.
"""

from __future__ import annotations

import numpy as np

METRICS = ("miou", "pixel_accuracy", "mean_dice")


def confusion_matrix(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255
) -> np.ndarray:
    """``cm[t, p]`` = number of pixels of true class t predicted as p, over all valid pixels.

    Ground-truth pixels equal to ``ignore_index`` (or outside ``[0, num_classes)``) are skipped.
    Predictions must lie in ``[0, num_classes)``: a model with another class count is a config error.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match target shape {target.shape}")
    target = target.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    target, pred = target[valid], pred[valid]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted class {int(pred.max())} is outside [0, {num_classes})")
    counts = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def semantic_metrics_batch(cms: np.ndarray) -> dict[str, np.ndarray]:
    """mIoU, pixel accuracy and mean Dice of a stack of confusion matrices ``[..., C, C]``, one value
    per matrix (fractions; NaN where there is nothing to measure). The bootstrap evaluates thousands of
    resampled confusion matrices at once through this."""
    cms = np.asarray(cms, np.float64)
    true_positive = np.diagonal(cms, axis1=-2, axis2=-1)
    gt_count = cms.sum(axis=-1)
    pred_count = cms.sum(axis=-2)
    union = gt_count + pred_count - true_positive
    present = union > 0
    counted = present.sum(axis=-1)
    total = cms.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, true_positive / np.where(present, union, 1), 0.0).sum(axis=-1) / counted
        dice_terms = 2 * true_positive / np.where(present, gt_count + pred_count, 1)
        dice = np.where(present, dice_terms, 0.0).sum(axis=-1) / counted
        accuracy = true_positive.sum(axis=-1) / total
    empty = (total == 0) | (counted == 0)
    return {
        name: np.where(empty, np.nan, values)
        for name, values in (("miou", iou), ("pixel_accuracy", accuracy), ("mean_dice", dice))
    }


def semantic_metrics(cm: np.ndarray) -> dict[str, float]:
    """mIoU, pixel accuracy and mean Dice, as fractions in [0, 1], from a confusion matrix."""
    return {name: float(value) for name, value in semantic_metrics_batch(cm).items()}


class SemanticStats:
    """Per-image confusion matrices: the dataset-level metrics of any weighting of the images (a
    bootstrap resample, one image alone) are those of the weighted sum of the matrices."""

    def __init__(self, cms: np.ndarray, names: list[str]) -> None:
        self.cms = np.asarray(cms, np.int64).reshape(len(names), *np.shape(cms)[-2:])
        self.names = list(names)

    def __len__(self) -> int:
        return len(self.names)

    def metrics(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Metrics per row of ``weights`` (``[R, N]`` image multiplicities)."""
        return semantic_metrics_batch(np.einsum("rn,nij->rij", np.asarray(weights, np.float64), self.cms))

    def concat(self, other: SemanticStats) -> SemanticStats:
        return SemanticStats(np.concatenate([self.cms, other.cms]), self.names + other.names)
