import copy
import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segbench.metrics.instance import evaluate_instances, masks_to_coco_results

H, W = 40, 40
KEYS = ("bbox_ap", "bbox_ap50", "bbox_ap75", "segm_ap", "segm_ap50", "segm_ap75")


def rect(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[r0:r1, c0:c1] = True
    return mask


def disc(cy: int, cx: int, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def xyxy(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


# (image_id, category_id, mask): two images, three categories.
OBJECTS = [
    (1, 1, rect(5, 20, 5, 25)),
    (1, 2, disc(28, 28, 8)),
    (2, 1, rect(10, 30, 2, 18)),
    (2, 3, rect(20, 38, 22, 38)),
    (2, 2, disc(10, 30, 6)),
]


def gt_annotation(ann_id: int, image_id: int, category_id: int, mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x1, y1, x2, y2 = xyxy(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")},
        "area": int(mask.sum()),
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "iscrowd": 0,
    }


def ground_truth() -> dict:
    return {
        "images": [{"id": i, "height": H, "width": W, "file_name": f"{i}.png"} for i in (1, 2)],
        "annotations": [gt_annotation(k + 1, *obj) for k, obj in enumerate(OBJECTS)],
        "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)],
    }


def predict(objects=OBJECTS, score: float = 0.9) -> list[dict]:
    results = []
    for image_id, category_id, mask in objects:
        results += masks_to_coco_results(
            image_id, np.array([xyxy(mask)]), np.array([score]), np.array([category_id]), mask[None]
        )
    return results


def mixed_predictions() -> list[dict]:
    """Perfect, shifted, wrong-class and spurious detections, with varied scores."""
    results = predict(OBJECTS[:2], score=0.95)
    shifted = np.roll(OBJECTS[2][2], 4, axis=1)
    results += masks_to_coco_results(
        2, np.array([xyxy(shifted)]), np.array([0.8]), np.array([1]), shifted[None]
    )
    results += predict([(2, 1, OBJECTS[3][2])], score=0.7)  # right place, wrong class
    results += predict([(2, 2, disc(10, 31, 6))], score=0.6)
    results += predict([(1, 3, rect(0, 4, 0, 4))], score=0.5)  # spurious
    return results


def cocoeval_directly(tmp_path, gt: dict, results: list[dict]) -> dict[str, float]:
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    coco_gt = COCO(str(gt_path))
    coco_dt = coco_gt.loadRes(str(res_path))
    out = {}
    for iou_type in ("bbox", "segm"):
        ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        for k, name in enumerate(("ap", "ap50", "ap75")):
            out[f"{iou_type}_{name}"] = float(ev.stats[k])
    return out


def test_matches_cocoeval_run_on_files(tmp_path):
    gt, results = ground_truth(), mixed_predictions()
    expected = cocoeval_directly(tmp_path, gt, results)
    got = evaluate_instances(gt, results)
    assert set(got) == set(KEYS)
    for key in KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key
    # The mix is imperfect, so this is not a trivial 1.0 == 1.0 comparison.
    assert 0 < got["segm_ap"] < 1 and 0 < got["bbox_ap"] < 1


def test_polygon_ground_truth_matches_cocoeval(tmp_path):
    gt = ground_truth()
    # Replace the first rectangle's RLE with the equivalent polygon (pixel-edge corners).
    gt["annotations"][0]["segmentation"] = [[5.0, 5.0, 25.0, 5.0, 25.0, 20.0, 5.0, 20.0]]
    results = mixed_predictions()
    expected = cocoeval_directly(tmp_path, gt, results)
    got = evaluate_instances(gt, results)
    for key in KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


def test_perfect_predictions_give_ap_one():
    metrics = evaluate_instances(ground_truth(), predict())
    for key in KEYS:
        assert metrics[key] == pytest.approx(1.0), key


def test_wrong_category_drops_ap():
    image_id, _, mask = OBJECTS[3]
    # The category-3 object predicted as category 1, scored below the two true category-1 detections.
    results = predict(OBJECTS[:3] + OBJECTS[4:]) + predict([(image_id, 1, mask)], score=0.5)
    metrics = evaluate_instances(ground_truth(), results)
    # Category 3 has no detection (AP 0); in category 1 the false positive ranks last (AP 1).
    # COCO AP is the mean over categories 1, 2, 3: (1 + 1 + 0) / 3.
    assert metrics["bbox_ap"] == pytest.approx(2 / 3)
    assert metrics["segm_ap"] == pytest.approx(2 / 3)


def test_shifted_mask_with_kept_box_changes_segm_but_not_bbox():
    image_id, category_id, mask = OBJECTS[0]  # 15x20 rectangle
    shifted = np.roll(mask, 5, axis=1)  # mask IoU = 15*15 / (15*25) = 0.6
    results = predict(OBJECTS[1:])
    results += masks_to_coco_results(
        image_id, np.array([xyxy(mask)]), np.array([0.9]), np.array([category_id]), shifted[None]
    )
    metrics = evaluate_instances(ground_truth(), results)
    assert metrics["bbox_ap"] == pytest.approx(1.0)
    assert metrics["segm_ap50"] == pytest.approx(1.0)  # 0.6 > 0.5 still matches
    assert metrics["segm_ap75"] < 1.0
    assert metrics["segm_ap"] < 1.0


def test_empty_results_give_zero():
    metrics = evaluate_instances(ground_truth(), [])
    assert metrics == {key: 0.0 for key in KEYS}


def test_no_ground_truth_gives_nan():
    gt = ground_truth()
    gt["annotations"] = []
    metrics = evaluate_instances(gt, predict())
    assert all(math.isnan(metrics[key]) for key in KEYS)


def test_missing_area_iscrowd_and_bytes_counts_are_filled_in():
    gt = ground_truth()
    incomplete = copy.deepcopy(gt)
    for ann in incomplete["annotations"]:
        del ann["area"], ann["iscrowd"], ann["bbox"]
        ann["segmentation"]["counts"] = ann["segmentation"]["counts"].encode("ascii")
    results = mixed_predictions()
    assert evaluate_instances(incomplete, results) == evaluate_instances(gt, results)


def test_inputs_are_not_modified_and_stdout_is_silent(capsys):
    gt, results = ground_truth(), mixed_predictions()
    gt_before, results_before = copy.deepcopy(gt), copy.deepcopy(results)
    evaluate_instances(gt, results)
    assert gt == gt_before and results == results_before
    assert capsys.readouterr().out == ""


def test_bbox_only_evaluation_and_segm_without_masks():
    results = [{k: v for k, v in r.items() if k != "segmentation"} for r in predict()]
    metrics = evaluate_instances(ground_truth(), results, iou_types=("bbox",))
    assert set(metrics) == {"bbox_ap", "bbox_ap50", "bbox_ap75"}
    assert metrics["bbox_ap"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="segmentation"):
        evaluate_instances(ground_truth(), results)


def test_unknown_image_id_is_rejected():
    results = predict()
    results[0]["image_id"] = 99
    with pytest.raises(ValueError, match="99"):
        evaluate_instances(ground_truth(), results)


# pycocotools' decode trips a numpy 2 DeprecationWarning inside its Cython code, not ours.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_masks_to_coco_results_round_trip():
    masks = np.stack([rect(1, 4, 2, 9), disc(20, 20, 5), np.zeros((H, W), bool)])
    boxes = np.array([[2, 1, 9, 4], [15.5, 15, 25, 25.25], [0, 0, 1, 1]], np.float32)
    results = masks_to_coco_results(7, boxes, np.array([0.9, 0.5, 0.1]), np.array([3, 1, 2]), masks)
    assert len(results) == 3
    assert results[0]["bbox"] == [2.0, 1.0, 7.0, 3.0]
    assert results[1]["bbox"] == [15.5, 15.0, 9.5, 10.25]
    assert [r["category_id"] for r in results] == [3, 1, 2]
    assert [r["score"] for r in results] == pytest.approx([0.9, 0.5, 0.1])
    assert all(r["image_id"] == 7 for r in results)
    for result, mask in zip(results, masks, strict=True):
        assert isinstance(result["segmentation"]["counts"], str)
        decoded = mask_utils.decode(result["segmentation"])
        np.testing.assert_array_equal(decoded.astype(bool), mask)
    json.dumps(results)  # plain Python types only


def test_masks_to_coco_results_without_masks_and_empty():
    results = masks_to_coco_results(1, np.array([[0, 0, 2, 2]]), np.array([1.0]), np.array([1]))
    assert "segmentation" not in results[0]
    assert (
        masks_to_coco_results(1, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), np.zeros((0, H, W))) == []
    )
    with pytest.raises(ValueError, match="same length"):
        masks_to_coco_results(1, np.zeros((2, 4)), np.zeros(1), np.zeros(2, int))
