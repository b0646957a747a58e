import math

import numpy as np
import pytest

from segbench.metrics import confusion_matrix, evaluate_semantic, semantic_metrics
from segbench.metrics.checker import semantic_batches

# 3 classes, one ignored pixel (255). Ground truth / prediction, pixel by pixel:
TARGET = np.array([[0, 0, 0, 1], [1, 1, 2, 255]])
PRED = np.array([[0, 0, 1, 1], [1, 2, 2, 0]])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(PRED, TARGET, num_classes=3)
    # rows: true class, columns: predicted class; the ignored pixel is not counted.
    expected = np.array(
        [
            [2, 1, 0],  # class 0: two right, one called 1
            [0, 2, 1],  # class 1: two right, one called 2
            [0, 0, 1],  # class 2: one right
        ]
    )
    np.testing.assert_array_equal(cm, expected)


def test_metrics_by_hand():
    metrics = semantic_metrics(confusion_matrix(PRED, TARGET, num_classes=3))
    # IoU: class 0 = 2/(3+2-2) = 2/3; class 1 = 2/(3+3-2) = 1/2; class 2 = 1/(1+2-1) = 1/2
    assert metrics["miou"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert metrics["pixel_accuracy"] == pytest.approx(5 / 7)
    # Dice: 2TP / (|gt| + |pred|) = 4/5, 4/6, 2/3
    assert metrics["mean_dice"] == pytest.approx((4 / 5 + 4 / 6 + 2 / 3) / 3)


def test_absent_class_is_left_out_of_the_mean():
    target = np.array([0, 0, 1, 1])
    metrics = semantic_metrics(confusion_matrix(target, target, num_classes=5))
    assert metrics["miou"] == 1.0 and metrics["mean_dice"] == 1.0


def test_class_predicted_but_absent_from_ground_truth_counts_as_zero_iou():
    target = np.array([0, 0, 0, 0])
    pred = np.array([0, 0, 0, 1])
    metrics = semantic_metrics(confusion_matrix(pred, target, num_classes=2))
    assert metrics["miou"] == pytest.approx((3 / 4 + 0) / 2)


def test_all_ignored_gives_nan():
    target = np.full((2, 2), 255)
    assert math.isnan(semantic_metrics(confusion_matrix(target * 0, target, 3))["miou"])


def test_out_of_range_prediction_is_rejected():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]), num_classes=3)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="does not match"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), num_classes=3)


def test_evaluate_accumulates_over_batches():
    class Sample:
        def __init__(self, image, label):
            self.image, self.label = image, label

    labels = [TARGET, TARGET, TARGET[:, :3]]
    samples = [Sample(np.zeros((*lab.shape, 3), np.uint8), lab) for lab in labels]
    batches = list(semantic_batches(samples, batch_size=4))
    # Different sizes never share a batch.
    assert [b[0].shape[0] for b in batches] == [2, 1]
    lookup = {TARGET.shape: PRED, TARGET[:, :3].shape: PRED[:, :3]}
    metrics = evaluate_semantic(
        lambda images: np.stack([lookup[images.shape[1:3]]] * len(images)), batches, 3
    )
    cm = 2 * confusion_matrix(PRED, TARGET, 3) + confusion_matrix(PRED[:, :3], TARGET[:, :3], 3)
    assert metrics == pytest.approx(semantic_metrics(cm))
