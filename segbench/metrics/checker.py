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
    """One metric of one backend next to the baseline, in points (percent).

    It passes when both hold: ``|delta| <= tolerance`` points, and ``value >= relative_floor *
    baseline`` (MLPerf-style: e.g. at least 99% of the baseline). ``paired`` is the per-image view.
    """

    metric: str
    value: float
    baseline: float
    delta: float
    tolerance: float
    passed: bool
    relative_floor: float = 0.0
    paired: PairedDelta | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["paired"] = self.paired.to_dict() if self.paired else None
        return data


@dataclass(frozen=True)
class PairedDelta:
    """Per-image deltas (candidate - baseline, points) summarised: their mean with a bootstrap
    confidence interval, so a reader tells a systematic shift (interval away from 0) from noise."""

    mean: float
    ci_low: float
    ci_high: float
    images: int
    changed: int  # images whose metric moved at all
    worst: list[tuple[str, float]]  # (image, delta) of the most negative deltas

    def to_dict(self) -> dict:
        return {**asdict(self), "worst": [list(pair) for pair in self.worst]}


def bootstrap_mean_ci(
    values: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded, so reports are reproducible)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_delta(
    candidate: Sequence[float], baseline: Sequence[float], names: Sequence[str], worst: int = 5
) -> PairedDelta:
    """Summarise per-image metric values (fractions) of a candidate against the baseline.

    Images where either value is NaN (nothing to measure in that image) are left out.
    """
    cand, base = np.asarray(candidate, np.float64), np.asarray(baseline, np.float64)
    keep = ~(np.isnan(cand) | np.isnan(base))
    deltas = 100 * (cand[keep] - base[keep])
    kept_names = [name for name, k in zip(names, keep, strict=True) if k]
    low, high = bootstrap_mean_ci(deltas)
    order = np.argsort(deltas, kind="stable")[:worst]
    return PairedDelta(
        mean=float(deltas.mean()) if deltas.size else math.nan,
        ci_low=low,
        ci_high=high,
        images=int(deltas.size),
        changed=int(np.count_nonzero(np.abs(deltas) > 1e-9)),
        worst=[(kept_names[i], float(deltas[i])) for i in order if deltas[i] < 0],
    )


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
    candidate: Mapping[str, float],
    baseline: Mapping[str, float],
    tolerance: float | Mapping[str, float],
    relative_floor: float = 0.0,
    paired: Mapping[str, PairedDelta] | None = None,
) -> list[MetricVerdict]:
    """Verdict per metric: passes when ``|candidate - baseline| <= tolerance`` points and
    ``candidate >= relative_floor * baseline`` (NaN never passes).

    ``tolerance`` is one number for every metric or one per metric. Inputs are fractions in [0, 1];
    verdicts are in points, the unit tolerances are written in.
    """
    verdicts = []
    for metric, base in baseline.items():
        allowed = tolerance[metric] if isinstance(tolerance, Mapping) else tolerance
        value, base_points = 100 * candidate[metric], 100 * base
        delta = value - base_points
        within = not math.isnan(delta) and abs(delta) <= allowed + 1e-9
        above_floor = not math.isnan(value) and value >= relative_floor * base_points - 1e-9
        verdicts.append(
            MetricVerdict(
                metric,
                value,
                base_points,
                delta,
                allowed,
                within and above_floor,
                relative_floor,
                (paired or {}).get(metric),
            )
        )
    return verdicts
