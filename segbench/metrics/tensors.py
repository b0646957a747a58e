"""Tensor-level comparison of a backend's raw outputs with the baseline's, Polygraphy-style.

The task metric can hide a broken backend on an easy evaluation set (a swapped pair of rarely
predicted classes may not move mIoU much), and it can move for reasons that are not the backend's
(near-tied detections). So every check also compares the raw forward outputs on the same inputs: per
output the max absolute and relative error, the mean absolute error and the cosine similarity; for
semantic logits the share of pixels whose argmax class agrees; for detections the share of confident
baseline detections the backend reproduces. It knows nothing of backends: it takes arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorTolerance:
    """What the raw outputs must satisfy for one precision (defaults in ``TENSOR_TOLERANCES``)."""

    # Semantic and panoptic models, every float output: max |err| / max |baseline|, and cosine similarity.
    max_rel_err: float
    cosine: float
    argmax_agreement: float  # semantic: minimum share of pixels with the baseline's argmax class
    # Instance: minimum share of confident baseline detections reproduced, a detection matching when its
    # label is the same, its score within ``score_tol`` and its box IoU at least ``box_iou``.
    detection_agreement: float
    score_tol: float
    box_iou: float


# fp32 backends differ from the CPU baseline by summation order only (~1e-5 relative; TF32 convolutions
# would not pass, which is the point); an fp16 graph rounds every activation to 11 significant bits,
# bf16 to 8. The max error is what catches a slightly wrong backend: cosine similarity barely moves
# when one layer's weights are off by 1%, the max error moves by 2%.
TENSOR_TOLERANCES = {
    "fp32": TensorTolerance(1e-3, 0.99999, 0.999, 0.99, score_tol=1e-3, box_iou=0.99),
    "fp16": TensorTolerance(2e-2, 0.999, 0.99, 0.95, score_tol=1e-2, box_iou=0.95),
    "bf16": TensorTolerance(1e-1, 0.99, 0.98, 0.9, score_tol=2e-2, box_iou=0.9),
}


@dataclass(frozen=True)
class OutputComparison:
    """One raw output, candidate against baseline, over every compared batch."""

    name: str  # the model output's name
    max_abs_err: float  # largest |candidate - baseline| (inf when either has non-finite values)
    max_rel_err: float  # max |err| / max |baseline|
    mean_abs_err: float  # mean |candidate - baseline| (inf when either has non-finite values)
    cosine: float  # cosine similarity of the flattened outputs (nan when either has non-finite values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TensorVerdict:
    """Tensor-level verdict of one backend: the compared outputs and the judged quantities."""

    outputs: list[OutputComparison]  # one per float output; none when a shape differs
    argmax_agreement: float | None = None  # semantic: share of pixels with the baseline's argmax class
    # Instance: share of the baseline's confident detections (score >= 0.3) the backend reproduces, the
    # mean over the compared batches.
    detection_agreement: float | None = None
    checks: dict[str, tuple[float, float, bool]] = field(default_factory=dict)  # name: (value, limit, ok)

    @property
    def passed(self) -> bool:
        return all(ok for _, _, ok in self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "outputs": [o.to_dict() for o in self.outputs],
            "argmax_agreement": self.argmax_agreement,
            "detection_agreement": self.detection_agreement,
            "checks": {
                k: {"value": v, "limit": lim, "passed": ok} for k, (v, lim, ok) in self.checks.items()
            },
            "passed": self.passed,
        }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def detection_agreement(
    expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    min_score: float = 0.3,
    score_tol: float = 0.01,
    box_iou: float = 0.95,
) -> tuple[float, float]:
    """Share of confident expected detections that ``actual`` reproduces, and their worst box error.

    Detections are padded, score-sorted rows (``boxes``, ``scores``, ``labels``, ``num_detections``),
    so near-tied scores may swap rows between two correct runtimes: each confident expected detection
    is matched to any actual one with the same label, box IoU >= ``box_iou`` and a score within
    ``score_tol``, instead of comparing row by row.
    """
    matched = total = 0
    worst = 0.0
    for image in range(expected["scores"].shape[0]):
        candidates = list(range(int(actual["num_detections"][image])))
        for row in np.flatnonzero(expected["scores"][image] >= min_score):
            total += 1
            box = expected["boxes"][image, row]
            for other in candidates:
                other_box = actual["boxes"][image, other]
                if (
                    actual["labels"][image, other] == expected["labels"][image, row]
                    and abs(actual["scores"][image, other] - expected["scores"][image, row]) <= score_tol
                    and _iou(box, other_box) >= box_iou
                ):
                    matched += 1
                    worst = max(worst, float(np.abs(box - other_box).max()))
                    candidates.remove(other)
                    break
    return (matched / total if total else 1.0), worst


def compare_output(
    name: str, expected: Sequence[np.ndarray], actual: Sequence[np.ndarray]
) -> OutputComparison:
    """Errors and cosine similarity of one float output over batches (arrays of equal shapes)."""
    want = np.concatenate([np.asarray(a, np.float64).ravel() for a in expected])
    got = np.concatenate([np.asarray(a, np.float64).ravel() for a in actual])
    error = np.abs(got - want)
    finite = np.isfinite(error).all()
    scale = float(np.abs(want).max()) if want.size else 0.0
    max_abs = float(error.max()) if error.size and finite else (0.0 if not error.size else float("inf"))
    norms = float(np.linalg.norm(want) * np.linalg.norm(got))
    if not finite:
        cosine = float("nan")
    elif norms > 0:
        cosine = float(np.dot(want, got) / norms)
    else:
        cosine = 1.0 if np.array_equal(want, got) else 0.0
    return OutputComparison(
        name=name,
        max_abs_err=max_abs,
        max_rel_err=max_abs / scale if scale > 0 else max_abs,
        mean_abs_err=float(error.mean()) if error.size and finite else max_abs,
        cosine=cosine,
    )


def compare_tensors(
    task: str,
    expected: Sequence[Mapping[str, np.ndarray]],
    actual: Sequence[Mapping[str, np.ndarray]],
    tolerance: TensorTolerance,
) -> TensorVerdict:
    """Compare per-batch raw outputs (dicts name -> array, batch by batch) and judge them.

    Semantic models are judged on the max relative error and cosine of every float output and the
    argmax agreement of the first; instance models on detection agreement (their padded rows reorder
    under near-ties, so elementwise errors are reported but not judged); panoptic models on the max
    relative error and cosine of every float output.
    A shape mismatch fails outright.
    """
    names = list(expected[0]) if expected else []
    checks: dict[str, tuple[float, float, bool]] = {}
    for want, got in zip(expected, actual, strict=True):
        for name in names:
            if np.shape(want[name]) != np.shape(got[name]):
                checks[f"shape:{name}"] = (0.0, 1.0, False)
    if checks:
        return TensorVerdict([], checks=checks)
    outputs = [
        compare_output(name, [b[name] for b in expected], [b[name] for b in actual])
        for name in names
        if np.issubdtype(np.asarray(expected[0][name]).dtype, np.floating)
    ]
    verdict: dict[str, Any] = {}
    if task == "instance":
        matched = [
            detection_agreement(want, got, score_tol=tolerance.score_tol, box_iou=tolerance.box_iou)
            for want, got in zip(expected, actual, strict=True)
        ]
        agreement = float(np.mean([share for share, _ in matched])) if matched else 1.0
        verdict["detection_agreement"] = agreement
        checks["detection_agreement"] = (
            agreement,
            tolerance.detection_agreement,
            agreement >= tolerance.detection_agreement,
        )
    else:
        for output in outputs:
            ok = output.max_rel_err <= tolerance.max_rel_err
            checks[f"max_rel_err:{output.name}"] = (output.max_rel_err, tolerance.max_rel_err, ok)
            ok = not np.isnan(output.cosine) and output.cosine >= tolerance.cosine
            checks[f"cosine:{output.name}"] = (output.cosine, tolerance.cosine, ok)
    if task == "semantic" and names:
        first = names[0]
        same = [
            np.argmax(w[first], axis=1) == np.argmax(g[first], axis=1)
            for w, g in zip(expected, actual, strict=True)
        ]
        agreement = float(np.concatenate([s.ravel() for s in same]).mean())
        verdict["argmax_agreement"] = agreement
        checks["argmax_agreement"] = (
            agreement,
            tolerance.argmax_agreement,
            agreement >= tolerance.argmax_agreement,
        )
    return TensorVerdict(outputs, checks=checks, **verdict)


def tensor_row(verdict: TensorVerdict) -> dict[str, Any]:
    """The verdict as one numerics row: the headline check (the first failing one, else the first)
    as ``value`` / ``tolerance``, everything else under ``tensors``."""
    checks = verdict.checks
    headline = next((name for name, (_, _, ok) in checks.items() if not ok), next(iter(checks), None))
    value, limit, _ = checks[headline] if headline else (None, None, True)
    return {
        "metric": f"tensors ({headline})" if headline else "tensors",
        "value": value,
        "baseline": None,
        "delta": None,
        "tolerance": limit,
        # Errors have an upper limit, similarities and agreements a lower one.
        "bound": "max" if headline and headline.startswith("max_") else "min",
        "verdict": "pass" if verdict.passed else "fail",
        "passed": verdict.passed,
        "tensors": verdict.to_dict(),
    }
