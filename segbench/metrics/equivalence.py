"""Verdicts on task metrics as equivalence tests, with the evaluation set's uncertainty.

A backend is judged on its deviation from the PyTorch fp32 baseline, ``delta = candidate - baseline``
in metric points, against the allowed band ``[band_low, band_high]``: ``+-tolerance`` points, and on the
low side also the relative floor (``candidate >= floor * baseline``). The uncertainty of ``delta`` comes
from a paired bootstrap over images (scipy's ``bootstrap``): each resample draws images with replacement,
and both the candidate's and the baseline's *dataset-level* metric are recomputed on that same draw from
per-image statistics (confusion matrices, COCO matches, PQ counts), so the interval is about the
quantity the verdict is about; AP and mIoU are not means of per-image values.

* ``pass``: the whole interval lies inside the band;
* ``fail``: the whole interval lies outside it (a confident shift or drop);
* ``inconclusive``: the interval straddles an edge; the set is too small to tell. The caller evaluates
  more images (see :func:`next_image_count`) and judges again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from segbench.metrics.tasks import Evaluation
from segbench.results.verdicts import FAIL, INCONCLUSIVE, PASS

_EPS = 1e-9  # points: float noise at a band edge must not decide a verdict
_SEED = 0  # a fixed stream: the same statistics give the same interval on every machine


@dataclass(frozen=True)
class MetricVerdict:
    """One metric of one backend against the baseline, in points (percent)."""

    metric: str
    value: float
    baseline: float
    delta: float
    tolerance: float
    verdict: str
    relative_floor: float = 0.0  # the share of the baseline the value must also reach (0.99: 99%); 0: none
    band_low: float = math.nan  # the lowest allowed delta, points: -tolerance, or the floor's when higher
    band_high: float = math.nan  # the highest allowed delta, points: +tolerance
    ci_low: float = math.nan  # lower end of delta's paired bootstrap interval, points (widened to hold delta)
    ci_high: float = math.nan  # upper end of delta's paired bootstrap interval, points
    confidence: float = 0.95  # the interval's confidence level, a fraction
    images: int = 0  # evaluation images the verdict is based on
    images_needed: int | None = None  # inconclusive: about how many images would decide it
    changed: int = 0  # images whose own metric moved
    worst: list[tuple[str, float]] = field(default_factory=list)  # most negative per-image deltas

    @property
    def passed(self) -> bool | None:
        """True on pass, False on fail, None when inconclusive."""
        return {PASS: True, FAIL: False}.get(self.verdict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["worst"] = [list(pair) for pair in self.worst]
        data["passed"] = self.passed
        return data


def band(baseline_points: float, tolerance: float, relative_floor: float) -> tuple[float, float]:
    """The allowed deviation in points: ``+-tolerance``, raised on the low side by the relative floor."""
    return max(-tolerance, (relative_floor - 1) * baseline_points), tolerance


def delta_interval(
    candidate: Evaluation, baseline: Evaluation, confidence: float, resamples: int
) -> dict[str, tuple[float, float]]:
    """Paired percentile-bootstrap interval (points) of ``candidate - baseline`` per metric, resampling
    images and recomputing each dataset-level metric on both sides of every draw."""
    n = len(baseline.stats)
    if len(candidate.stats) != n:
        raise ValueError(f"candidate has {len(candidate.stats)} images, the baseline {n}")
    metrics = list(baseline.metrics)
    if n < 2:  # nothing to resample: no interval, so no verdict but inconclusive
        return dict.fromkeys(metrics, (math.nan, math.nan))

    def deltas(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        rows = np.asarray(indices).reshape(-1, n)
        # Image multiplicities of each draw: the per-image statistics are summed with these weights.
        flat = rows + n * np.arange(len(rows))[:, None]
        weights = np.bincount(flat.ravel(), minlength=len(rows) * n).reshape(len(rows), n)
        found, base = candidate.stats.metrics(weights), baseline.stats.metrics(weights)
        return np.stack([100 * (found[m] - base[m]) for m in metrics])

    result = scipy_stats.bootstrap(
        (np.arange(n),),
        deltas,
        vectorized=True,
        n_resamples=resamples,
        batch=256,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(_SEED),
    )
    low, high = np.atleast_1d(result.confidence_interval.low), np.atleast_1d(result.confidence_interval.high)
    return {m: (float(lo), float(hi)) for m, lo, hi in zip(metrics, low, high, strict=True)}


def decide(delta: float, low: float, high: float, band_low: float, band_high: float) -> str:
    """pass / fail / inconclusive for a deviation with interval ``[low, high]`` against the band."""
    if any(math.isnan(v) for v in (delta, low, high)):
        return INCONCLUSIVE if not math.isnan(delta) else FAIL
    if low >= band_low - _EPS and high <= band_high + _EPS:
        return PASS
    if high < band_low - _EPS or low > band_high + _EPS:
        return FAIL
    return INCONCLUSIVE


def images_needed(
    delta: float, low: float, high: float, band_low: float, band_high: float, images: int
) -> int:
    """About how many images would make an inconclusive verdict conclusive, assuming the interval's
    half-width shrinks as 1/sqrt(images) around the same deviation."""
    half = max((high - low) / 2, _EPS)
    inside = band_low <= delta <= band_high
    # Room the half-width must fit in: to the nearer band edge from inside, to the band from outside.
    room = min(delta - band_low, band_high - delta) if inside else max(band_low - delta, delta - band_high)
    if room <= _EPS:
        return -1  # on the edge itself: no finite set decides it
    return max(images + 1, math.ceil(images * (half / room) ** 2))


def judge(
    candidate: Evaluation,
    baseline: Evaluation,
    tolerances: float | Mapping[str, float],
    relative_floor: float = 0.0,
    confidence: float = 0.95,
    resamples: int = 2000,
) -> list[MetricVerdict]:
    """A verdict per baseline metric (see the module docstring); metrics are fractions, verdicts points."""
    intervals = delta_interval(candidate, baseline, confidence, resamples)
    per_image_found, per_image_base = candidate.per_image(), baseline.per_image()
    verdicts = []
    for metric, base in baseline.metrics.items():
        allowed = tolerances[metric] if isinstance(tolerances, Mapping) else tolerances
        value, base_points = 100 * candidate.metrics[metric], 100 * base
        delta = value - base_points
        band_low, band_high = band(base_points, allowed, relative_floor)
        # The interval is widened to hold the point estimate itself: a percentile interval of a very
        # discrete statistic (one changed image) can miss it, and a verdict never contradicts it.
        low, high = min(intervals[metric][0], delta), max(intervals[metric][1], delta)
        verdict = decide(delta, low, high, band_low, band_high)
        per_image = 100 * (per_image_found[metric] - per_image_base[metric])
        kept = ~np.isnan(per_image)
        order = np.argsort(np.where(kept, per_image, np.inf), kind="stable")[:5]
        verdicts.append(
            MetricVerdict(
                metric=metric,
                value=value,
                baseline=base_points,
                delta=delta,
                tolerance=allowed,
                verdict=verdict,
                relative_floor=relative_floor,
                band_low=band_low,
                band_high=band_high,
                ci_low=low,
                ci_high=high,
                confidence=confidence,
                images=len(baseline.stats),
                images_needed=images_needed(delta, low, high, band_low, band_high, len(baseline.stats))
                if verdict == INCONCLUSIVE
                else None,
                changed=int(np.count_nonzero(np.abs(per_image[kept]) > 1e-9)),
                worst=[
                    (baseline.names[i], float(per_image[i])) for i in order if kept[i] and per_image[i] < 0
                ],
            )
        )
    return verdicts


def baseline_rows(baseline: Evaluation) -> list[MetricVerdict]:
    """The baseline's own metrics as rows (delta 0 against itself)."""
    return [
        MetricVerdict(metric, 100 * value, 100 * value, 0.0, 0.0, PASS, images=len(baseline.stats))
        for metric, value in baseline.metrics.items()
    ]


def next_image_count(current: int, cap: int) -> int | None:
    """The next evaluation-set size after an inconclusive verdict: doubled, up to ``cap``; None at it."""
    return None if current >= cap else min(2 * current, cap)
