"""Task-level evaluation for the numerics checker: one function per task, same shape for all.

Each takes a ``predict(images) -> postprocessed outputs`` function (the pipeline a backend runs) and the
evaluation samples, and returns the metrics whose deltas against the baseline get a verdict:

* semantic: mIoU, pixel accuracy, mean Dice (samples need ``.image`` and ``.label``);
* instance: box and mask AP through pycocotools' COCOeval (samples are synthetic shapes scenes);
* panoptic: PQ, SQ, RQ following the COCO panoptic definition (samples are synthetic shapes scenes).

Instance and panoptic models report labels as class indices plus ``category_offset`` = the dataset's
category id (the shapes categories are class index + 1, and torchvision-style detectors already
predict category ids, with 0 for background).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segbench.data.readers import SemanticSample
from segbench.metrics.checker import sample_batches, semantic_batches
from segbench.metrics.instance import evaluate_instances, masks_to_coco_results
from segbench.metrics.panoptic import PanopticImage, pq_compute
from segbench.metrics.semantic import confusion_matrix, semantic_metrics

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


@dataclass
class Evaluation:
    """Task metrics over the whole set, and the same metrics per image (for the paired view)."""

    metrics: dict[str, float]
    per_image: dict[str, list[float]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)


def _name(sample: Any) -> str:
    return str(getattr(sample, "name", None) or getattr(sample, "index", "?"))


def _semantic(
    predict: Predict, samples: Sequence, batch_size: int, num_classes: int, ignore_index: int, per_image: bool
) -> Evaluation:
    if samples and not hasattr(samples[0], "label"):  # synthetic scenes: the label is .semantic
        samples = [SemanticSample(s.name, s.image, s.semantic) for s in samples]
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    rows: dict[str, list[float]] = {name: [] for name in TASK_METRICS["semantic"]}
    for images, labels in semantic_batches(samples, batch_size):
        predictions = predict(images)
        for pred, label in zip(predictions, labels, strict=True):
            cm = confusion_matrix(pred, label, num_classes, ignore_index)
            total += cm
            if per_image:
                for name, value in semantic_metrics(cm).items():
                    rows[name].append(value)
    names = [_name(s) for s in samples] if per_image else []
    return Evaluation(semantic_metrics(total), rows if per_image else {}, names)


def _instance(
    predict: Predict, samples: Sequence, batch_size: int, category_offset: int, per_image: bool
) -> Evaluation:
    from segbench.data.coco import coco_instances

    results: list[dict[str, Any]] = []
    for batch in sample_batches(samples, batch_size):
        outputs = predict(np.stack([s.image for s in batch]))
        for sample, out in zip(batch, outputs, strict=True):
            masks = np.asarray(out["masks"], bool)
            boxes = out["boxes"] if "boxes" in out else _boxes_from_masks(masks)
            labels = np.asarray(out["labels"], np.int64) + category_offset
            results += masks_to_coco_results(
                sample.index + 1, np.asarray(boxes), out["scores"], labels, masks
            )
    truth = coco_instances(samples)
    metrics = evaluate_instances(truth, results)
    rows: dict[str, list[float]] = {name: [] for name in TASK_METRICS["instance"]}
    if per_image:
        for image in truth["images"]:
            one = {
                **truth,
                "images": [image],
                "annotations": [a for a in truth["annotations"] if a["image_id"] == image["id"]],
            }
            found = evaluate_instances(one, [r for r in results if r["image_id"] == image["id"]])
            for name in rows:
                rows[name].append(found[name])
    names = [_name(s) for s in samples] if per_image else []
    return Evaluation(
        {name: metrics[name] for name in TASK_METRICS["instance"]}, rows if per_image else {}, names
    )


def _panoptic_pairs(
    predict: Predict, samples: Sequence, batch_size: int, category_offset: int
) -> list[tuple[PanopticImage, PanopticImage]]:
    from segbench.data.coco import panoptic_png_and_segments, rgb_to_id

    pairs = []
    for batch in sample_batches(samples, batch_size):
        outputs = predict(np.stack([s.image for s in batch]))
        for sample, (id_map, segments) in zip(batch, outputs, strict=True):
            png, gt_segments = panoptic_png_and_segments(sample)
            shifted = [{**s, "category_id": s["category_id"] + category_offset} for s in segments]
            pairs.append(
                (
                    PanopticImage(rgb_to_id(png), gt_segments, sample.index),
                    PanopticImage(id_map, shifted, sample.index),
                )
            )
    return pairs


def _panoptic_categories() -> list[dict[str, Any]]:
    from segbench.data.shapes import CATEGORIES

    return [{"id": c.id, "isthing": int(c.isthing), "name": c.name} for c in CATEGORIES]


def panoptic_quality(
    predict: Predict, samples: Sequence, batch_size: int, category_offset: int = 0
) -> dict[str, Any]:
    """The full ``pq_compute`` summary (all / things / stuff / per category) of ``predict`` on scenes."""
    pairs = _panoptic_pairs(predict, samples, batch_size, category_offset)
    return pq_compute([gt for gt, _ in pairs], [pred for _, pred in pairs], _panoptic_categories())


def _panoptic(
    predict: Predict, samples: Sequence, batch_size: int, category_offset: int, per_image: bool
) -> Evaluation:
    pairs = _panoptic_pairs(predict, samples, batch_size, category_offset)
    categories = _panoptic_categories()
    summary = pq_compute([gt for gt, _ in pairs], [pred for _, pred in pairs], categories)["all"]
    rows: dict[str, list[float]] = {name: [] for name in TASK_METRICS["panoptic"]}
    if per_image:
        for gt, pred in pairs:
            one = pq_compute([gt], [pred], categories)["all"]
            for name in rows:
                rows[name].append(one[name])
    names = [_name(s) for s in samples] if per_image else []
    return Evaluation(
        {name: summary[name] for name in TASK_METRICS["panoptic"]}, rows if per_image else {}, names
    )


def evaluate_instance_task(
    predict: Predict, samples: Sequence, batch_size: int, category_offset: int = 0
) -> dict[str, float]:
    """Box and mask AP of ``predict`` on synthetic scenes (fractions)."""
    return _instance(predict, samples, batch_size, category_offset, per_image=False).metrics


def evaluate_task(
    task: str,
    predict: Predict,
    samples: Sequence,
    batch_size: int,
    num_classes: int,
    ignore_index: int = 255,
    category_offset: int = 0,
    per_image: bool = False,
) -> Evaluation:
    """Metrics of ``predict`` on ``samples`` for ``task`` (fractions in [0, 1]), and per image when
    ``per_image`` is set (NaN where an image has nothing to measure, e.g. no instances)."""
    if task == "semantic":
        return _semantic(predict, samples, batch_size, num_classes, ignore_index, per_image)
    if task == "instance":
        return _instance(predict, samples, batch_size, category_offset, per_image)
    if task == "panoptic":
        return _panoptic(predict, samples, batch_size, category_offset, per_image)
    raise ValueError(f"no evaluation for task {task!r}")
