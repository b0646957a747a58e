"""Weighted COCO AP and the per-image statistics of each task reproduce the official numbers."""

import copy

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segbench.data.coco import coco_instances
from segbench.data.shapes import ShapesDataset
from segbench.metrics.coco_ap import CocoApStats
from segbench.metrics.instance import evaluate_instances_with, masks_to_coco_results
from segbench.metrics.panoptic import PanopticImage, PanopticStats, panoptic_counts, pq_compute

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning"
)  # pycocotools decode

CATEGORIES = [{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}]


def noisy_detections(truth: dict, seed: int, rounded_scores: bool) -> list[dict]:
    """Jittered copies of the ground truth with misses, wrong classes and (optionally) tied scores."""
    rng = np.random.default_rng(seed)
    results = []
    for ann in truth["annotations"]:
        if rng.random() < 0.2:
            continue
        x, y, w, h = ann["bbox"]
        jitter = rng.normal(0, 2, 4)
        box = np.array([[x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]]])
        score = round(rng.random(), 1) if rounded_scores else rng.random()
        category = ann["category_id"] if rng.random() > 0.1 else truth["categories"][0]["id"]
        mask = mask_utils.decode(ann["segmentation"])[None]
        results += masks_to_coco_results(ann["image_id"], box, [score], [category], mask)
    return results


@pytest.fixture(scope="module")
def scenes():
    samples = list(ShapesDataset(24, 96, 96, seed=3))
    return coco_instances(samples)


@pytest.mark.parametrize("rounded_scores", [False, True])
def test_unit_weights_reproduce_cocoeval(scenes, rounded_scores):
    results = noisy_detections(scenes, seed=0, rounded_scores=rounded_scores)  # rounded: many tied scores
    metrics, evaluators = evaluate_instances_with(scenes, results)
    ids = [image["id"] for image in scenes["images"]]
    for iou_type, evaluator in evaluators.items():
        stats = CocoApStats.from_evaluator(evaluator, ids, [str(i) for i in ids])
        assert stats.metrics(np.ones((1, len(ids))))[0] == pytest.approx(metrics[f"{iou_type}_ap"], abs=1e-12)


def test_a_weight_of_two_is_the_image_twice(scenes):
    """pycocotools on a set where image 0 appears twice (under a new id) gives the AP of weight 2."""
    results = noisy_detections(scenes, seed=1, rounded_scores=False)
    ids = [image["id"] for image in scenes["images"]]
    first = ids[0]
    doubled = copy.deepcopy(scenes)
    new_id = max(ids) + 1
    doubled["images"].append({**doubled["images"][0], "id": new_id})
    doubled["annotations"] += [
        {**a, "image_id": new_id} for a in scenes["annotations"] if a["image_id"] == first
    ]
    # A copy's detections score a hair lower, so the order among the copies is the only question.
    twice = results + [
        {**r, "image_id": new_id, "score": r["score"] - 1e-9} for r in results if r["image_id"] == first
    ]
    expected, _ = evaluate_instances_with(doubled, twice, iou_types=("bbox",))
    _, evaluators = evaluate_instances_with(scenes, results, iou_types=("bbox",))
    stats = CocoApStats.from_evaluator(evaluators["bbox"], ids, [str(i) for i in ids])
    weights = np.ones((1, len(ids)))
    weights[0, 0] = 2
    assert stats.metrics(weights)[0] == pytest.approx(expected["bbox_ap"], abs=1e-12)
    # And a weight of 0 leaves the image out.
    without, _ = evaluate_instances_with(
        {
            **scenes,
            "images": scenes["images"][1:],
            "annotations": [a for a in scenes["annotations"] if a["image_id"] != first],
        },
        [r for r in results if r["image_id"] != first],
        iou_types=("bbox",),
    )
    weights[0, 0] = 0
    assert stats.metrics(weights)[0] == pytest.approx(without["bbox_ap"], abs=1e-12)


def test_concatenated_chunks_equal_one_evaluation(scenes):
    results = noisy_detections(scenes, seed=2, rounded_scores=True)
    ids = [image["id"] for image in scenes["images"]]

    def stats_of(chosen):
        truth = {**scenes, "images": [i for i in scenes["images"] if i["id"] in chosen],
                 "annotations": [a for a in scenes["annotations"] if a["image_id"] in chosen]}  # fmt: skip
        _, evaluators = evaluate_instances_with(
            truth, [r for r in results if r["image_id"] in chosen], ("segm",)
        )
        return CocoApStats.from_evaluator(evaluators["segm"], chosen, [str(i) for i in chosen])

    whole = stats_of(ids)
    joined = stats_of(ids[:10]).concat(stats_of(ids[10:]))
    weights = np.random.default_rng(0).multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=50)
    np.testing.assert_allclose(joined.metrics(weights), whole.metrics(weights), atol=1e-12)


def test_panoptic_stats_reproduce_pq_compute():
    rng = np.random.default_rng(0)
    pairs = []
    for index in range(6):
        gt = np.zeros((20, 20), np.int64)
        gt[:10], gt[10:] = 1, 2
        pred = gt.copy()
        pred[rng.integers(0, 20, 30), rng.integers(0, 20, 30)] = 0
        if index % 2:
            pred[5:15] = 2
        segments = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}]
        pairs.append((PanopticImage(gt, segments, index), PanopticImage(pred, segments, index)))
    official = pq_compute([g for g, _ in pairs], [p for _, p in pairs], CATEGORIES)["all"]
    stats = PanopticStats(panoptic_counts(pairs, CATEGORIES), [str(i) for i in range(6)])
    found = stats.metrics(np.ones((1, 6)))
    for name in ("pq", "sq", "rq"):
        assert found[name][0] == pytest.approx(official[name], abs=1e-12)
    # One image alone is pq_compute on that image alone.
    alone = stats.metrics(np.eye(6))["pq"]
    for index, (gt, pred) in enumerate(pairs):
        assert alone[index] == pytest.approx(pq_compute([gt], [pred], CATEGORIES)["all"]["pq"], abs=1e-12)
