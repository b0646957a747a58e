"""Task metrics and the numerics checker."""

from segbench.metrics.checker import MetricVerdict, compare_metrics, evaluate_semantic, semantic_batches
from segbench.metrics.semantic import confusion_matrix, semantic_metrics

__all__ = [
    "MetricVerdict",
    "compare_metrics",
    "confusion_matrix",
    "evaluate_semantic",
    "semantic_batches",
    "semantic_metrics",
]
