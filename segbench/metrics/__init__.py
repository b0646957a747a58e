"""Task metrics (semantic, instance, panoptic) and the numerics checker."""

from segbench.metrics.checker import evaluate_semantic, semantic_batches
from segbench.metrics.equivalence import MetricVerdict, judge
from segbench.metrics.instance import evaluate_instances, masks_to_coco_results
from segbench.metrics.panoptic import PanopticImage, pq_compute, pq_from_coco
from segbench.metrics.semantic import confusion_matrix, semantic_metrics

__all__ = [
    "MetricVerdict",
    "PanopticImage",
    "confusion_matrix",
    "evaluate_instances",
    "evaluate_semantic",
    "judge",
    "masks_to_coco_results",
    "pq_compute",
    "pq_from_coco",
    "semantic_batches",
    "semantic_metrics",
]
