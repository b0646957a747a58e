"""The numerics checker's tensor-level checks (task-level verdicts: test_equivalence.py)."""

import math

import numpy as np
import pytest

from segbench.metrics.tensors import TENSOR_TOLERANCES, compare_output, compare_tensors, tensor_row


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
