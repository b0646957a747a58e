"""Verdict rules of the numerics checker: absolute points and relative floor, the paired view with its
bootstrap interval, and the tensor-level checks."""

import math

import numpy as np
import pytest

from segbench.metrics.checker import bootstrap_mean_ci, compare_metrics, paired_delta
from segbench.metrics.tensors import TENSOR_TOLERANCES, compare_output, compare_tensors, tensor_row


def verdict(candidate, baseline, tolerance, floor):
    return compare_metrics({"m": candidate}, {"m": baseline}, tolerance, floor)[0]


def test_both_the_absolute_tolerance_and_the_relative_floor_must_hold():
    # 40.0 -> 39.7: within 0.5 points, but under 99% of the baseline (39.6 is the floor: passes).
    assert verdict(0.397, 0.400, 0.5, 0.99).passed
    # 20.0 -> 19.7: within 0.5 points, but 98.5% of the baseline: the floor fails it.
    low = verdict(0.197, 0.200, 0.5, 0.99)
    assert not low.passed and low.relative_floor == 0.99 and low.delta == pytest.approx(-0.3)
    # 80.0 -> 79.3: above 99% (79.2), but 0.7 points away: the absolute tolerance fails it.
    assert not verdict(0.793, 0.800, 0.5, 0.99).passed
    # Better than the baseline never fails the floor, but may fail the absolute tolerance (a change).
    assert verdict(0.803, 0.800, 0.5, 0.99).passed
    assert not verdict(0.81, 0.800, 0.5, 0.99).passed
    assert not verdict(math.nan, 0.800, 0.5, 0.0).passed


def test_bootstrap_interval_on_known_data():
    assert bootstrap_mean_ci(np.full(20, 0.25)) == (0.25, 0.25)
    rng = np.random.default_rng(1)
    values = rng.normal(1.0, 2.0, size=400)
    low, high = bootstrap_mean_ci(values)
    # The normal-theory 95% interval is mean +- 1.96 * sd / sqrt(n); the bootstrap agrees to ~10%.
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert low < values.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert low > 0.5  # a shift of 1 with this spread and n is clearly systematic
    assert bootstrap_mean_ci(values) == (low, high)  # seeded: reproducible reports


def test_paired_delta_separates_systematic_from_noise():
    base = np.linspace(0.5, 0.9, 30)
    names = [f"img{i}" for i in range(30)]
    shifted = paired_delta(base - 0.01, base, names)  # every image 1 point worse
    assert shifted.mean == pytest.approx(-1.0) and shifted.ci_high < 0 and shifted.changed == 30
    noise = np.where(np.arange(30) % 2, 0.01, -0.01)  # images up and down alike: no shift
    noisy = paired_delta(base + noise, base, names)
    assert noisy.ci_low < 0 < noisy.ci_high
    worst = paired_delta(np.where(np.arange(30) == 7, base - 0.2, base), base, names)
    assert worst.worst == [("img7", pytest.approx(-20.0))] and worst.changed == 1
    # Images with nothing to measure (NaN) are left out of the pairs.
    with_nan = paired_delta([np.nan, 0.5, 0.6], [0.4, 0.5, 0.6], ["a", "b", "c"])
    assert with_nan.images == 2 and with_nan.mean == 0.0


def logits(seed, shape=(2, 3, 8, 8)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_tensor_check_of_semantic_outputs():
    want = [{"logits": logits(0)}, {"logits": logits(1)}]
    same = compare_tensors("semantic", want, want, TENSOR_TOLERANCES["fp32"])
    assert same.passed and same.argmax_agreement == 1.0 and same.outputs[0].cosine == pytest.approx(1.0)
    # 1% off everywhere: cosine stays high, the max relative error fails fp32 and passes fp16.
    off = [{"logits": b["logits"] * 1.01} for b in want]
    fp32 = compare_tensors("semantic", want, off, TENSOR_TOLERANCES["fp32"])
    assert not fp32.passed and not fp32.checks["max_rel_err:logits"][2] and fp32.checks["cosine:logits"][2]
    assert compare_tensors("semantic", want, off, TENSOR_TOLERANCES["fp16"]).passed
    # Two classes swapped: the argmax agreement fails.
    swapped = [{"logits": b["logits"][:, [1, 0, 2]]} for b in want]
    bad = compare_tensors("semantic", want, swapped, TENSOR_TOLERANCES["fp16"])
    assert not bad.passed and bad.argmax_agreement < 0.8
    row = tensor_row(bad)
    assert row["metric"].startswith("tensors (") and row["passed"] is False and row["tensors"]["checks"]
    # A shape mismatch fails outright.
    assert not compare_tensors(
        "semantic", want, [{"logits": logits(0)[:1]}] * 2, TENSOR_TOLERANCES["fp32"]
    ).passed


def detections(scores, boxes, labels):
    return {
        "boxes": np.array([boxes], np.float32),
        "scores": np.array([scores], np.float32),
        "labels": np.array([labels], np.int64),
        "num_detections": np.array([len(scores)]),
    }


def test_tensor_check_of_detections_ignores_row_order_but_not_scores():
    boxes = [[0, 0, 10, 10], [20, 20, 40, 40]]
    want = [detections([0.9, 0.8], boxes, [1, 2])]
    reordered = [detections([0.8, 0.9], boxes[::-1], [2, 1])]
    assert compare_tensors("instance", want, reordered, TENSOR_TOLERANCES["fp32"]).detection_agreement == 1.0
    # A score 0.005 off: within fp16's matching, outside fp32's.
    nudged = [detections([0.905, 0.8], boxes, [1, 2])]
    assert compare_tensors("instance", want, nudged, TENSOR_TOLERANCES["fp16"]).passed
    assert not compare_tensors("instance", want, nudged, TENSOR_TOLERANCES["fp32"]).passed


def test_non_finite_outputs_fail():
    bad = logits(0)
    bad[0, 0, 0, 0] = np.inf
    output = compare_output("logits", [logits(0)], [bad])
    assert output.max_abs_err == math.inf and math.isnan(output.cosine)
    verdict = compare_tensors("panoptic", [{"mask_logits": logits(0)}], [{"mask_logits": bad}],
                              TENSOR_TOLERANCES["bf16"])  # fmt: skip
    assert not verdict.passed
