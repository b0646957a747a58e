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


def semantic_metrics(cm: np.ndarray) -> dict[str, float]:
    """mIoU, pixel accuracy and mean Dice, as fractions in [0, 1], from a confusion matrix."""
    cm = cm.astype(np.float64)
    true_positive = np.diag(cm)
    gt_count = cm.sum(axis=1)
    pred_count = cm.sum(axis=0)
    union = gt_count + pred_count - true_positive
    present = union > 0
    total = cm.sum()
    if total == 0 or not present.any():
        return {"miou": float("nan"), "pixel_accuracy": float("nan"), "mean_dice": float("nan")}
    iou = true_positive[present] / union[present]
    dice = 2 * true_positive[present] / (gt_count[present] + pred_count[present])
    return {
        "miou": float(iou.mean()),
        "pixel_accuracy": float(true_positive.sum() / total),
        "mean_dice": float(dice.mean()),
    }
