"""The numerics checker: evaluate a prediction function on a dataset and judge it against a baseline.

It knows nothing of backends: the caller passes a ``predict(images) -> label maps`` function (the same
preprocess -> backend forward -> postprocess pipeline the benchmark times) and gets metric values back;
``compare_metrics`` then turns a candidate and a baseline into verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from segbench.metrics.semantic import confusion_matrix, semantic_metrics

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class MetricVerdict:
    """One metric of one backend next to the baseline, in points (percent)."""

    metric: str
    value: float
    baseline: float
    delta: float
    tolerance: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def sample_batches(samples: Sequence, batch_size: int) -> Iterator[list]:
    """Consecutive samples with same-size ``.image`` in groups of up to ``batch_size``."""
    batch: list = []
    for sample in samples:
        if batch and (len(batch) == batch_size or sample.image.shape != batch[0].image.shape):
            yield batch
            batch = []
        batch.append(sample)
    if batch:
        yield batch


def semantic_batches(samples: Sequence, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stack consecutive same-size samples (``.image``, ``.label``) into batches of up to ``batch_size``."""
    for batch in sample_batches(samples, batch_size):
        yield np.stack([s.image for s in batch]), np.stack([s.label for s in batch])


def evaluate_semantic(
    predict: Predict,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    ignore_index: int = 255,
) -> dict[str, float]:
    """mIoU, pixel accuracy and mean Dice (fractions) of ``predict`` over all batches."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for images, labels in batches:
        pred = predict(images)
        cm += confusion_matrix(pred, labels, num_classes, ignore_index)
    return semantic_metrics(cm)


def compare_metrics(
    candidate: Mapping[str, float], baseline: Mapping[str, float], tolerance: float | Mapping[str, float]
) -> list[MetricVerdict]:
    """Verdict per metric: passes when ``|candidate - baseline| <= tolerance`` points (NaN never passes).

    ``tolerance`` is one number for every metric or one per metric. Inputs are fractions in [0, 1];
    verdicts are in points, the unit tolerances are written in.
    """
    verdicts = []
    for metric, base in baseline.items():
        allowed = tolerance[metric] if isinstance(tolerance, Mapping) else tolerance
        value, base_points = 100 * candidate[metric], 100 * base
        delta = value - base_points
        passed = not math.isnan(delta) and abs(delta) <= allowed + 1e-9
        verdicts.append(MetricVerdict(metric, value, base_points, delta, allowed, passed))
    return verdicts
