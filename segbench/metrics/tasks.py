"""Task-level evaluation for the numerics checker: one function per task, same shape for all.

Each takes a ``predict(images) -> postprocessed outputs`` function (the pipeline a backend runs) and the
evaluation samples, and returns the metrics whose deltas against the baseline get a verdict:

* semantic: mIoU, pixel accuracy, mean Dice;
* instance: box and mask AP through pycocotools' COCOeval;
* panoptic: PQ, SQ, RQ following the COCO panoptic definition.

The samples give their ground truth through :mod:`segbench.data.ground_truth` (semantic: ``.image`` and
``.label``; instance: the image's COCO annotations; panoptic: its segment-id map and ``segments_info``;
both with the dataset's categories), so any dataset that provides it is evaluated the same way: the
synthetic scenes, a COCO-format dataset on disk, image/mask folders.

Instance and panoptic models report labels as class indices plus ``category_offset`` = the dataset's
category id (the shapes categories are class index + 1, and torchvision-style detectors already
predict category ids, with 0 for background).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from segbench.data.ground_truth import (
    InstanceGroundTruth,
    PanopticGroundTruth,
    SemanticGroundTruth,
    dataset_categories,
    instances_ground_truth,
)
from segbench.metrics.checker import sample_batches, semantic_batches
from segbench.metrics.coco_ap import CocoApStats
from segbench.metrics.instance import evaluate_instances_with, masks_to_coco_results
from segbench.metrics.panoptic import PanopticImage, PanopticStats, panoptic_counts, pq_compute
from segbench.metrics.semantic import SemanticStats, confusion_matrix

TASK_METRICS = {
    "semantic": ("miou", "pixel_accuracy", "mean_dice"),
    "instance": ("bbox_ap", "segm_ap"),
    "panoptic": ("pq", "sq", "rq"),
}
Predict = Callable[[np.ndarray], Any]


def _boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """xyxy boxes enclosing each mask, for models (like Mask2Former) that predict masks only."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if len(xs):
            boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


class TaskStats(Protocol):
    """Per-image sufficient statistics of a task's metrics: the dataset-level metrics of any weighting
    of the images (a bootstrap resample, one image alone) without running the models again."""

    names: list[str]

    def __len__(self) -> int: ...

    def metrics(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Metric (fraction) per row of ``weights``, ``[R, N]`` image multiplicities."""
        ...

    def concat(self, other: Any) -> TaskStats:
        """These images followed by ``other``'s."""
        ...


class InstanceStats:
    """Box and mask AP from pycocotools' per-image matches (see :mod:`segbench.metrics.coco_ap`)."""

    def __init__(self, parts: dict[str, CocoApStats]) -> None:
        self.parts = parts  # metric name -> its IoU type's matches
        self.names = next(iter(parts.values())).names

    def __len__(self) -> int:
        return len(self.names)

    def metrics(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        return {metric: stats.metrics(weights) for metric, stats in self.parts.items()}

    def concat(self, other: InstanceStats) -> InstanceStats:
        return InstanceStats(
            {metric: self.parts[metric].concat(other.parts[metric]) for metric in self.parts}
        )


@dataclass
class Evaluation:
    """Task metrics over the whole set (fractions) and the per-image statistics behind them."""

    metrics: dict[str, float]
    stats: TaskStats

    @property
    def names(self) -> list[str]:
        return self.stats.names

    def per_image(self) -> dict[str, np.ndarray]:
        """Each metric of each image alone (NaN where an image has nothing to measure)."""
        return self.stats.metrics(np.eye(len(self.stats)))

    def extended(self, more: Evaluation) -> Evaluation:
        """This evaluation followed by ``more`` on further images: the metrics of the union."""
        stats = self.stats.concat(more.stats)
        return Evaluation(_unit_metrics(stats), stats)


def _unit_metrics(stats: TaskStats) -> dict[str, float]:
    return {name: float(values[0]) for name, values in stats.metrics(np.ones((1, len(stats)))).items()}


def _name(sample: Any) -> str:
    return str(getattr(sample, "name", None) or getattr(sample, "image_id", "?"))


def _semantic(
    predict: Predict,
    samples: Sequence[SemanticGroundTruth],
    batch_size: int,
    num_classes: int,
    ignore_index: int,
) -> Evaluation:
    cms = [
        confusion_matrix(pred, label, num_classes, ignore_index)
        for images, labels in semantic_batches(samples, batch_size)
        for pred, label in zip(predict(images), labels, strict=True)
    ]
    stats = SemanticStats(np.reshape(cms, (len(cms), num_classes, num_classes)), [_name(s) for s in samples])
    return Evaluation(_unit_metrics(stats), stats)


def _instance(
    predict: Predict, samples: Sequence[InstanceGroundTruth], batch_size: int, category_offset: int
) -> Evaluation:
    results: list[dict[str, Any]] = []
    for batch in sample_batches(samples, batch_size):
        outputs = predict(np.stack([s.image for s in batch]))
        for sample, out in zip(batch, outputs, strict=True):
            masks = np.asarray(out["masks"], bool)
            boxes = out["boxes"] if "boxes" in out else _boxes_from_masks(masks)
            labels = np.asarray(out["labels"], np.int64) + category_offset
            results += masks_to_coco_results(sample.image_id, np.asarray(boxes), out["scores"], labels, masks)
    metrics, evaluators = evaluate_instances_with(instances_ground_truth(samples), results)
    image_ids, names = [s.image_id for s in samples], [_name(s) for s in samples]
    stats = InstanceStats(
        {
            f"{iou_type}_ap": CocoApStats.from_evaluator(evaluator, image_ids, names)
            for iou_type, evaluator in evaluators.items()
        }
    )
    return Evaluation({name: metrics[name] for name in TASK_METRICS["instance"]}, stats)


def _panoptic_pairs(
    predict: Predict, samples: Sequence[PanopticGroundTruth], batch_size: int, category_offset: int
) -> list[tuple[PanopticImage, PanopticImage]]:
    pairs = []
    for batch in sample_batches(samples, batch_size):
        outputs = predict(np.stack([s.image for s in batch]))
        for sample, (id_map, segments) in zip(batch, outputs, strict=True):
            truth = sample.panoptic_truth()
            shifted = [{**s, "category_id": s["category_id"] + category_offset} for s in segments]
            pairs.append(
                (
                    PanopticImage(truth.id_map, truth.segments, sample.image_id),
                    PanopticImage(id_map, shifted, sample.image_id),
                )
            )
    return pairs


def _panoptic_categories(samples: Sequence[PanopticGroundTruth]) -> list[dict[str, Any]]:
    return [c.as_coco() for c in dataset_categories(samples)]


def panoptic_quality(
    predict: Predict, samples: Sequence[PanopticGroundTruth], batch_size: int, category_offset: int = 0
) -> dict[str, Any]:
    """The full ``pq_compute`` summary (all / things / stuff / per category) of ``predict`` on ``samples``."""
    pairs = _panoptic_pairs(predict, samples, batch_size, category_offset)
    return pq_compute([gt for gt, _ in pairs], [pred for _, pred in pairs], _panoptic_categories(samples))


def _panoptic(
    predict: Predict, samples: Sequence[PanopticGroundTruth], batch_size: int, category_offset: int
) -> Evaluation:
    pairs = _panoptic_pairs(predict, samples, batch_size, category_offset)
    counts = panoptic_counts(pairs, _panoptic_categories(samples))
    stats = PanopticStats(counts, [_name(s) for s in samples])
    return Evaluation(_unit_metrics(stats), stats)


def evaluate_instance_task(
    predict: Predict, samples: Sequence[InstanceGroundTruth], batch_size: int, category_offset: int = 0
) -> dict[str, float]:
    """Box and mask AP of ``predict`` on ``samples`` (fractions)."""
    return _instance(predict, samples, batch_size, category_offset).metrics


def evaluate_task(
    task: str,
    predict: Predict,
    samples: Sequence,
    batch_size: int,
    num_classes: int,
    ignore_index: int = 255,
    category_offset: int = 0,
) -> Evaluation:
    """Metrics of ``predict`` on ``samples`` for ``task`` (fractions in [0, 1]), with the per-image
    statistics the numerics checker resamples. ``samples`` provide the task's ground truth
    (:mod:`segbench.data.ground_truth`); ``num_classes`` and ``ignore_index`` are the semantic task's."""
    if task == "semantic":
        return _semantic(predict, samples, batch_size, num_classes, ignore_index)
    if task == "instance":
        return _instance(predict, samples, batch_size, category_offset)
    if task == "panoptic":
        return _panoptic(predict, samples, batch_size, category_offset)
    raise ValueError(f"no evaluation for task {task!r}")
