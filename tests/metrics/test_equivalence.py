"""Task-level verdicts as equivalence tests: pass, fail and inconclusive on constructed deltas."""

import math

import numpy as np
import pytest

from segbench.metrics.coco_ap import CocoApStats
from segbench.metrics.equivalence import (
    band,
    decide,
    images_needed,
    judge,
    next_image_count,
)
from segbench.metrics.instance import evaluate_instances_with
from segbench.metrics.semantic import SemanticStats
from segbench.metrics.tasks import Evaluation, InstanceStats, _unit_metrics
from segbench.results.verdicts import FAIL, INCONCLUSIVE, PASS

pytestmark = pytest.mark.filterwarnings("error")  # a degenerate bootstrap must not warn either


def semantic(cms: np.ndarray) -> Evaluation:
    stats = SemanticStats(cms, [f"img{i}" for i in range(len(cms))])
    return Evaluation(_unit_metrics(stats), stats)


def scenes(n: int, seed: int = 0) -> np.ndarray:
    """Per-image confusion matrices of a good 4-class segmenter (about 90% mIoU), varying per image."""
    rng = np.random.default_rng(seed)
    cms = rng.integers(0, 300, (n, 4, 4))
    cms[:, range(4), range(4)] += rng.integers(8000, 12000, (n, 4))
    return cms


def test_identical_outputs_pass_with_a_zero_width_interval():
    base = semantic(scenes(29))
    for verdict in judge(semantic(scenes(29)), base, 0.5, 0.99):
        assert verdict.verdict == PASS and verdict.passed is True
        assert verdict.delta == 0 and verdict.ci_low == 0 and verdict.ci_high == 0 and verdict.changed == 0


def test_a_systematic_two_point_drop_fails():
    cms = scenes(29)
    worse = cms.copy()
    # Every image moves ~3.5% of its class-0 pixels to class 1: mIoU drops about 2 points.
    moved = (cms[:, 0, 0] * 0.035).astype(int)
    worse[:, 0, 0] -= moved
    worse[:, 0, 1] += moved
    verdicts = {v.metric: v for v in judge(semantic(worse), semantic(cms), 0.5, 0.99)}
    miou = verdicts["miou"]
    assert miou.delta == pytest.approx(-2, abs=0.6)
    assert miou.verdict == FAIL and miou.passed is False
    assert miou.ci_high < miou.band_low  # confidently below the band, not merely below on average
    assert miou.changed == 29 and len(miou.worst) == 5


def test_the_interval_is_paired():
    """Images differ a lot from each other; the candidate moves every image by the same tiny amount.
    An unpaired interval would be wide; the paired one is narrow and passes."""
    cms = scenes(29, seed=1)
    cms[::2] //= 3  # very unequal images
    shifted = cms.copy()
    shifted[:, 2, 2] -= 5
    shifted[:, 2, 3] += 5
    (miou, *_) = judge(semantic(shifted), semantic(cms), 0.5, 0.99)
    assert miou.verdict == PASS and miou.ci_high - miou.ci_low < 0.05


def test_the_relative_floor_narrows_the_band_below():
    assert band(80.0, 0.5, 0.99) == (-0.5, 0.5)  # 99% of 80 is 79.2: the absolute tolerance binds
    assert band(20.0, 0.5, 0.99) == pytest.approx((-0.2, 0.5))  # 99% of 20 is 19.8: the floor binds
    assert band(20.0, 0.5, 0.0) == (-0.5, 0.5)


def test_decide_on_the_band_edges():
    assert decide(0.1, -0.1, 0.3, -0.5, 0.5) == PASS
    assert decide(0.0, -0.5, 0.5, -0.5, 0.5) == PASS  # the edges belong to the band
    assert decide(0.3, 0.1, 0.6, -0.5, 0.5) == INCONCLUSIVE
    assert decide(-0.8, -1.2, -0.6, -0.5, 0.5) == FAIL
    assert decide(0.8, 0.6, 1.2, -0.5, 0.5) == FAIL  # a confident change upwards is a change too
    assert decide(math.nan, math.nan, math.nan, -0.5, 0.5) == FAIL  # a NaN metric never passes
    assert decide(0.1, math.nan, math.nan, -0.5, 0.5) == INCONCLUSIVE


def test_images_needed_grows_with_how_close_the_deviation_is_to_an_edge():
    # Half-width 0.2 around 0.1 in a +-0.2 band: the half-width must shrink to 0.1, four times the images.
    assert images_needed(0.1, -0.1, 0.3, -0.2, 0.2, 32) == 128
    assert images_needed(0.15, -0.05, 0.35, -0.2, 0.2, 32) == 512
    assert images_needed(0.2, 0.0, 0.4, -0.2, 0.2, 32) == -1  # on the edge: no set decides it
    assert next_image_count(32, 256) == 64 and next_image_count(200, 256) == 256
    assert next_image_count(256, 256) is None


# -- instance: one flipped detection ------------------------------------------------------------------


def coco_scene(n_images: int, flipped: set[int], shift: int) -> tuple[dict, list[dict]]:
    """Ground truth of ``n_images`` images with three boxes each (four in every fifth), and detections as
    a real detector makes them: the three found with high scores, the fourth in some images with a low
    one, and five low-scored false positives per image. In the ``flipped`` images NMS kept the other of
    two near-tied boxes for the first object, ``shift`` px off (2 px: IoU 0.82, no match at 0.85+)."""
    rng = np.random.default_rng(0)
    images, annotations, results = [], [], []
    for i in range(n_images):
        image_id = i + 1
        images.append({"id": image_id, "width": 100, "height": 100})
        for k in range(4 if i % 5 == 0 else 3):
            box = [5 + 30 * k, 10 + (i % 7), 20, 20] if k < 3 else [10, 60, 15, 15]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "bbox": box,
                 "area": float(box[2] * box[3]), "iscrowd": 0}
            )  # fmt: skip
            if k == 3 and i % 10:
                continue  # missed by the detector
            if k == 0 and i in flipped:
                box = [box[0] + shift, *box[1:]]
            score = rng.uniform(0.05, 0.3) if k == 3 else rng.uniform(0.5, 1.0)
            results.append({"image_id": image_id, "category_id": 1, "bbox": box, "score": score})
        for j in range(5):
            box = [40 + 5 * j, 70, 10, 10]
            results.append(
                {"image_id": image_id, "category_id": 1, "bbox": box, "score": rng.uniform(0.05, 0.6)}
            )
    truth = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    return truth, results


def instance(n_images: int, flipped: set[int], shift: int = 2) -> Evaluation:
    truth, results = coco_scene(n_images, flipped, shift)
    metrics, evaluators = evaluate_instances_with(truth, results, iou_types=("bbox",))
    ids = [image["id"] for image in truth["images"]]
    stats = InstanceStats(
        {"bbox_ap": CocoApStats.from_evaluator(evaluators["bbox"], ids, [str(i) for i in ids])}
    )
    return Evaluation({"bbox_ap": metrics["bbox_ap"]}, stats)


def test_one_flipped_detection_in_29_images_does_not_fail():
    verdict = judge(instance(29, {7}), instance(29, set()), 0.2, 0.99)[0]
    assert verdict.changed == 1
    # One image out of 29 moves box AP by about a point (a point estimate would fail it),
    assert abs(verdict.delta) > 0.2
    # but 29 images cannot tell one flip from a systematic shift: inconclusive, never fail.
    assert verdict.verdict == INCONCLUSIVE and verdict.passed is None
    assert verdict.ci_low < verdict.band_low <= 0 <= verdict.ci_high
    assert verdict.images == 29 and verdict.images_needed > 29


@pytest.mark.slow
def test_one_flip_passes_once_the_set_resolves_it():
    # 1 px off (IoU 0.90): it only misses at IoU 0.95. Inconclusive on 64 images, decided on 128.
    small, large = (judge(instance(n, {7}, shift=1), instance(n, set()), 0.2, 0.99)[0] for n in (64, 128))
    assert small.changed == large.changed == 1
    assert small.verdict == INCONCLUSIVE and large.verdict == PASS
    assert large.ci_high - large.ci_low < small.ci_high - small.ci_low


def test_the_same_flip_in_every_image_fails():
    every = set(range(29))
    verdict = judge(instance(29, every), instance(29, set()), 0.2, 0.99)[0]
    assert verdict.changed == 29 and verdict.verdict == FAIL


def test_verdicts_are_reproducible():
    runs = [judge(instance(29, {3, 9}), instance(29, set()), 0.2, 0.99)[0] for _ in range(2)]
    assert runs[0] == runs[1]
