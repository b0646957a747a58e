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
from typing import Any

import numpy as np

from segbench.data.readers import SemanticSample
from segbench.metrics.checker import evaluate_semantic, sample_batches, semantic_batches
from segbench.metrics.instance import evaluate_instances, masks_to_coco_results
from segbench.metrics.panoptic import PanopticImage, pq_compute

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


def evaluate_instance_task(
    predict: Predict, samples: Sequence, batch_size: int, category_offset: int = 0
) -> dict[str, float]:
    from segbench.data.coco import coco_instances

    results = []
    for batch in sample_batches(samples, batch_size):
        outputs = predict(np.stack([s.image for s in batch]))
        for sample, out in zip(batch, outputs, strict=True):
            masks = np.asarray(out["masks"], bool)
            boxes = out["boxes"] if "boxes" in out else _boxes_from_masks(masks)
            labels = np.asarray(out["labels"], np.int64) + category_offset
            results += masks_to_coco_results(
                sample.index + 1, np.asarray(boxes), out["scores"], labels, masks
            )
    metrics = evaluate_instances(coco_instances(samples), results)
    return {name: metrics[name] for name in TASK_METRICS["instance"]}


def panoptic_quality(
    predict: Predict, samples: Sequence, batch_size: int, category_offset: int = 0
) -> dict[str, Any]:
    """The full ``pq_compute`` summary (all / things / stuff / per category) of ``predict`` on scenes."""
    from segbench.data.coco import panoptic_png_and_segments, rgb_to_id
    from segbench.data.shapes import CATEGORIES

    truth, predictions = [], []
    for batch in sample_batches(samples, batch_size):
        outputs = predict(np.stack([s.image for s in batch]))
        for sample, (id_map, segments) in zip(batch, outputs, strict=True):
            png, gt_segments = panoptic_png_and_segments(sample)
            truth.append(PanopticImage(rgb_to_id(png), gt_segments, sample.index))
            shifted = [{**s, "category_id": s["category_id"] + category_offset} for s in segments]
            predictions.append(PanopticImage(id_map, shifted, sample.index))
    categories = [{"id": c.id, "isthing": int(c.isthing), "name": c.name} for c in CATEGORIES]
    return pq_compute(truth, predictions, categories)


def evaluate_panoptic_task(
    predict: Predict, samples: Sequence, batch_size: int, category_offset: int = 0
) -> dict[str, float]:
    summary = panoptic_quality(predict, samples, batch_size, category_offset)["all"]
    return {name: summary[name] for name in TASK_METRICS["panoptic"]}


def evaluate_task(
    task: str,
    predict: Predict,
    samples: Sequence,
    batch_size: int,
    num_classes: int,
    ignore_index: int = 255,
    category_offset: int = 0,
) -> dict[str, float]:
    """Metrics of ``predict`` on ``samples`` for ``task`` (fractions in [0, 1])."""
    if task == "semantic":
        if samples and not hasattr(samples[0], "label"):  # synthetic scenes: the label is .semantic
            samples = [SemanticSample(s.name, s.image, s.semantic) for s in samples]
        return evaluate_semantic(predict, semantic_batches(samples, batch_size), num_classes, ignore_index)
    if task == "instance":
        return evaluate_instance_task(predict, samples, batch_size, category_offset)
    if task == "panoptic":
        return evaluate_panoptic_task(predict, samples, batch_size, category_offset)
    raise ValueError(f"no evaluation for task {task!r}")
