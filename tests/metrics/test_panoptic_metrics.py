import copy
import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from segbench.data import ShapesDataset, id_to_rgb, read_panoptic_png, write_shapes_dataset
from segbench.metrics.panoptic import PanopticImage, pq_compute, pq_from_coco

# 1, 2, 5: things; 3, 4: stuff. Category 5 never appears anywhere.
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 3, "name": "sky", "isthing": 0},
    {"id": 4, "name": "road", "isthing": 0},
    {"id": 5, "name": "unused", "isthing": 1},
]


def row(width: int, *spans: tuple[int, int, int]) -> np.ndarray:
    """A 1 x width id map with ``id`` on columns ``[start, stop)`` for each (id, start, stop)."""
    ids = np.zeros((1, width), np.int64)
    for segment_id, start, stop in spans:
        ids[0, start:stop] = segment_id
    return ids


def seg(segment_id: int, category_id: int, iscrowd: int = 0) -> dict:
    return {"id": segment_id, "category_id": category_id, "iscrowd": iscrowd}


def pq(gt: PanopticImage | list, pred: PanopticImage | list) -> dict:
    gts = gt if isinstance(gt, list) else [gt]
    preds = pred if isinstance(pred, list) else [pred]
    return pq_compute(gts, preds, CATEGORIES)


def test_perfect_prediction_with_different_ids():
    gt_map = np.zeros((10, 10), np.int64)
    gt_map[:5], gt_map[5:] = 1, 2  # sky, road
    gt_map[1:4, 1:4] = 3  # person
    gt_map[6:9, 5:9] = 4  # car
    gt = PanopticImage(gt_map, [seg(1, 3), seg(2, 4), seg(3, 1), seg(4, 2)])
    pred = PanopticImage(gt_map * 10 + 7, [seg(17, 3), seg(27, 4), seg(37, 1), seg(47, 2)])
    result = pq(gt, pred)
    for group, n in (("all", 4), ("things", 2), ("stuff", 2)):
        assert result[group] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": n}
    # The unused category is absent everywhere: NaN and not counted in n.
    assert math.isnan(result["per_category"][5]["pq"])
    assert result["per_category"][1] == {
        "name": "person",
        "isthing": True,
        "pq": 1.0,
        "sq": 1.0,
        "rq": 1.0,
        "tp": 1,
        "fp": 0,
        "fn": 0,
    }


@pytest.mark.parametrize(("pred_width", "matched"), [(50, False), (51, True)])
def test_match_needs_iou_strictly_above_half(pred_width, matched):
    # GT person on columns 0..99, sky on 100..199. The predicted person covers columns 0..pred_width-1
    # inside it, so IoU = pred_width / 100: 0.50 is not a match, 0.51 is.
    gt = PanopticImage(row(200, (1, 0, 100), (2, 100, 200)), [seg(1, 1), seg(2, 3)])
    pred = PanopticImage(row(200, (1, 0, pred_width), (2, pred_width, 200)), [seg(1, 1), seg(2, 3)])
    person = pq(gt, pred)["per_category"][1]
    if matched:
        assert (person["tp"], person["fp"], person["fn"]) == (1, 0, 0)
        assert person["pq"] == pytest.approx(0.51)
        assert person["sq"] == pytest.approx(0.51)
        assert person["rq"] == 1.0
    else:
        # Unmatched on both sides: the prediction lies in the GT person, not in void, so it is an FP.
        assert (person["tp"], person["fp"], person["fn"]) == (0, 1, 1)
        assert person["pq"] == person["sq"] == person["rq"] == 0.0


def test_known_mix_of_tp_fp_fn():
    # 10x10, sky (id 9) everywhere except: person A rows 0-1 (20 px), person B rows 4-5 cols 0-4 (10 px).
    gt_map = np.full((10, 10), 9)
    gt_map[0:2, :] = 1
    gt_map[4:6, 0:5] = 2
    gt = PanopticImage(gt_map, [seg(1, 1), seg(2, 1), seg(9, 3)])
    # Prediction: A over cols 0-7 only (IoU 16/20 = 0.8), B missed (sky), a spurious person at rows 8-9
    # cols 0-4 on sky (FP).
    pred_map = np.full((10, 10), 9)
    pred_map[0:2, 0:8] = 1
    pred_map[8:10, 0:5] = 5
    pred = PanopticImage(pred_map, [seg(1, 1), seg(5, 1), seg(9, 3)])
    result = pq(gt, pred)
    person = result["per_category"][1]
    # PQ = 0.8 / (1 + 0.5 + 0.5) = 0.4, SQ = 0.8, RQ = 1 / 2 = 0.5
    assert (person["tp"], person["fp"], person["fn"]) == (1, 1, 1)
    assert person["pq"] == pytest.approx(0.4)
    assert person["sq"] == pytest.approx(0.8)
    assert person["rq"] == pytest.approx(0.5)
    assert result["things"]["pq"] == pytest.approx(0.4) and result["things"]["n"] == 1
    # Sky: GT 70 px, pred 74 px, intersection 60 -> IoU 60 / 84.
    assert result["per_category"][3]["sq"] == pytest.approx(60 / 84)


def test_void_pixels_are_removed_from_the_union():
    # GT: person cols 0-9, void cols 10-14, sky cols 15-19.
    gt = PanopticImage(row(20, (1, 0, 10), (2, 15, 20)), [seg(1, 1), seg(2, 3)])
    # Pred person on cols 2-13: 8 px in the GT person, 4 px in void.
    # IoU = 8 / (12 + 10 - 8 - 4) = 0.8 (it would be 8 / 14 if void counted).
    pred = PanopticImage(row(20, (2, 0, 2), (1, 2, 14), (2, 14, 20)), [seg(1, 1), seg(2, 3)])
    result = pq(gt, pred)
    person = result["per_category"][1]
    assert person["tp"] == 1
    assert person["sq"] == pytest.approx(0.8)
    # Sky: pred 8 px (1 in void), GT 5 px, intersection 5: IoU = 5 / (8 + 5 - 5 - 1) = 5 / 7.
    assert result["per_category"][3]["sq"] == pytest.approx(5 / 7)


@pytest.mark.parametrize(
    ("start", "stop", "is_fp"),
    [
        (8, 20, False),  # 12 px, 10 in void: more than half, ignored
        (5, 15, True),  # 10 px, 5 in void: exactly half is not "more than half", FP
        (4, 14, True),  # 10 px, 4 in void: FP
    ],
)
def test_unmatched_prediction_in_void(start, stop, is_fp):
    # GT: sky cols 0-9, void cols 10-19. Pred: a person on [start, stop), sky left of it.
    gt = PanopticImage(row(20, (1, 0, 10)), [seg(1, 3)])
    pred = PanopticImage(row(20, (1, 0, start), (2, start, stop)), [seg(1, 3), seg(2, 1)])
    person = pq(gt, pred)["per_category"][1]
    assert person["fp"] == int(is_fp)
    assert (person["tp"], person["fn"]) == (0, 0)


def crowd_gt() -> PanopticImage:
    # sky cols 0-9, a person crowd cols 10-19, road cols 20-29.
    return PanopticImage(row(30, (1, 0, 10), (2, 10, 20), (3, 20, 30)), [seg(1, 3), seg(2, 1, 1), seg(3, 4)])


def test_missed_crowd_is_not_a_false_negative():
    pred = PanopticImage(row(30, (1, 0, 10), (3, 20, 30)), [seg(1, 3), seg(3, 4)])
    result = pq(crowd_gt(), pred)
    assert result["per_category"][1]["fn"] == 0
    assert math.isnan(result["per_category"][1]["pq"])  # TP + FP + FN = 0: left out
    assert result["things"]["n"] == 0 and math.isnan(result["things"]["pq"])
    assert result["all"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}


@pytest.mark.parametrize(("category_id", "fp_category"), [(1, None), (2, 2)])
def test_prediction_in_crowd_is_ignored_only_for_its_own_class(category_id, fp_category):
    # Pred segment on cols 8-19: 12 px, 10 of them in the person crowd.
    pred = PanopticImage(
        row(30, (1, 0, 8), (5, 8, 20), (3, 20, 30)), [seg(1, 3), seg(5, category_id), seg(3, 4)]
    )
    result = pq(crowd_gt(), pred)["per_category"]
    assert result[1]["tp"] == 0 and result[1]["fn"] == 0  # crowds are never matched nor missed
    assert result[1]["fp"] == 0
    assert result[2]["fp"] == (1 if fp_category == 2 else 0)
    # Sky is still matched: IoU 8 / 10.
    assert result[3]["sq"] == pytest.approx(0.8)


def test_void_and_crowd_areas_add_up():
    # GT: void cols 0-2, person crowd cols 3-5, sky cols 6-19. A person prediction on cols 0-9
    # has 3 px void + 3 px crowd = 6 of 10 > half: ignored; a car there has only 3 of 10: FP.
    gt = PanopticImage(row(20, (2, 3, 6), (1, 6, 20)), [seg(1, 3), seg(2, 1, 1)])
    for category_id, fp in ((1, 0), (2, 1)):
        pred = PanopticImage(row(20, (5, 0, 10), (1, 10, 20)), [seg(5, category_id), seg(1, 3)])
        assert pq(gt, pred)["per_category"][category_id]["fp"] == fp


def test_things_stuff_split_and_counts():
    gt = PanopticImage(
        row(40, (1, 0, 10), (2, 10, 20), (3, 20, 30), (4, 30, 40)),
        [seg(1, 1), seg(2, 2), seg(3, 3), seg(4, 4)],
    )
    # person perfect; car cols 10-17 (IoU 0.8); sky cols 18-29 (IoU 10/12); road predicted as a
    # second sky segment (sky FP, road FN).
    pred = PanopticImage(
        row(40, (1, 0, 10), (2, 10, 18), (3, 18, 30), (5, 30, 40)),
        [seg(1, 1), seg(2, 2), seg(3, 3), seg(5, 3)],
    )
    result = pq(gt, pred)
    # person: 1, 1, 1 | car: .8, .8, 1 | sky: PQ (5/6)/1.5 = 5/9, SQ 5/6, RQ 1/1.5 = 2/3 | road: 0, 0, 0
    assert result["things"] == pytest.approx({"pq": 0.9, "sq": 0.9, "rq": 1.0, "n": 2})
    assert result["stuff"] == pytest.approx({"pq": 5 / 18, "sq": 5 / 12, "rq": 1 / 3, "n": 2})
    assert result["all"] == pytest.approx(
        {"pq": (1 + 0.8 + 5 / 9) / 4, "sq": (1 + 0.8 + 5 / 6) / 4, "rq": (1 + 1 + 2 / 3) / 4, "n": 4}
    )
    road = result["per_category"][4]
    assert (road["tp"], road["fp"], road["fn"], road["pq"], road["sq"]) == (0, 0, 1, 0.0, 0.0)


def test_counts_accumulate_over_images():
    # Image A: person matched with IoU 0.9 (per-image PQ 0.9).
    gt_a = PanopticImage(row(20, (1, 0, 10), (2, 10, 20)), [seg(1, 1), seg(2, 3)])
    pred_a = PanopticImage(row(20, (1, 0, 9), (2, 9, 20)), [seg(1, 1), seg(2, 3)])
    # Image B: person missed (FN) and three spurious persons on sky (FP) (per-image PQ 0).
    gt_b = PanopticImage(row(40, (1, 0, 10), (2, 10, 40)), [seg(1, 1), seg(2, 3)])
    pred_b = PanopticImage(
        row(40, (2, 0, 10), (3, 10, 14), (4, 14, 18), (5, 18, 22), (2, 22, 40)),
        [seg(2, 3), seg(3, 1), seg(4, 1), seg(5, 1)],
    )
    person = pq([gt_a, gt_b], [pred_a, pred_b])["per_category"][1]
    # Summed: TP 1, FP 3, FN 1 -> PQ = 0.9 / (1 + 1.5 + 0.5) = 0.3, not the per-image mean 0.45.
    assert (person["tp"], person["fp"], person["fn"]) == (1, 3, 1)
    assert person["pq"] == pytest.approx(0.3)
    assert person["rq"] == pytest.approx(1 / 3)
    assert person["sq"] == pytest.approx(0.9)


def test_listed_segment_absent_from_map_is_skipped():
    gt = PanopticImage(row(10, (1, 0, 10)), [seg(1, 3), seg(2, 1)])  # person 2 has no pixels
    pred = PanopticImage(row(10, (1, 0, 10)), [seg(1, 3), seg(8, 2)])  # car 8 has no pixels
    result = pq(gt, pred)["per_category"]
    assert result[1]["fn"] == 0 and result[2]["fp"] == 0
    assert result[3]["pq"] == 1.0


def test_errors():
    gt = PanopticImage(row(10, (1, 0, 10)), [seg(1, 3)])
    with pytest.raises(ValueError, match="id 7"):
        pq(gt, PanopticImage(row(10, (1, 0, 5), (7, 5, 10)), [seg(1, 3)]))
    with pytest.raises(ValueError, match="id 4"):
        pq(PanopticImage(row(10, (4, 0, 10)), [seg(1, 3)]), gt)
    with pytest.raises(ValueError, match="unknown category 42"):
        pq(gt, PanopticImage(row(10, (1, 0, 10)), [seg(1, 42)]))
    with pytest.raises(ValueError, match="shape"):
        pq(gt, PanopticImage(np.ones((2, 10), np.int64), [seg(1, 3)]))
    with pytest.raises(ValueError, match="numbers of images"):
        pq([gt, gt], [gt])


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), ShapesDataset(3, 64, 64))


def test_pq_from_coco_against_itself(shapes_root):
    gt_json = json.loads((shapes_root / "panoptic.json").read_text())
    result = pq_from_coco(gt_json, shapes_root / "panoptic", gt_json, shapes_root / "panoptic")
    for group in ("all", "things", "stuff"):
        assert result[group]["pq"] == 1.0 and result[group]["n"] > 0


def test_pq_from_coco_dropped_segment_lowers_things_rq(shapes_root, tmp_path):
    gt_json = json.loads((shapes_root / "panoptic.json").read_text())
    things = {c["id"] for c in gt_json["categories"] if c["isthing"]}
    pred_dir = tmp_path / "pred"
    shutil.copytree(shapes_root / "panoptic", pred_dir)
    pred_json = copy.deepcopy(gt_json)

    # Drop the first thing segment: remove it from segments_info and unlabel its pixels.
    ann = next(
        a for a in pred_json["annotations"] if any(s["category_id"] in things for s in a["segments_info"])
    )
    dropped = next(s for s in ann["segments_info"] if s["category_id"] in things)
    ann["segments_info"].remove(dropped)
    ids = read_panoptic_png(pred_dir / ann["file_name"])
    ids[ids == dropped["id"]] = 0
    Image.fromarray(id_to_rgb(ids)).save(pred_dir / ann["file_name"])

    result = pq_from_coco(gt_json, shapes_root / "panoptic", pred_json, pred_dir)
    # The dropped category c with n_c GT segments: TP n_c - 1, FN 1, so RQ_c = (n_c - 1) / (n_c - 0.5);
    # every other thing category keeps RQ 1. Things RQ is the mean over the k present thing categories.
    segments = [s for a in gt_json["annotations"] for s in a["segments_info"]]
    n_c = sum(s["category_id"] == dropped["category_id"] for s in segments)
    k = len({s["category_id"] for s in segments} & things)
    expected = (k - 1 + (n_c - 1) / (n_c - 0.5)) / k
    assert result["things"]["rq"] == pytest.approx(expected)
    assert result["things"]["rq"] < 1.0
    assert result["per_category"][dropped["category_id"]]["fn"] == 1
    assert result["stuff"]["pq"] == 1.0


def test_pq_from_coco_missing_prediction_counts_false_negatives(shapes_root):
    gt_json = json.loads((shapes_root / "panoptic.json").read_text())
    pred_json = copy.deepcopy(gt_json)
    missing = pred_json["annotations"].pop(0)
    result = pq_from_coco(gt_json, shapes_root / "panoptic", pred_json, shapes_root / "panoptic")
    total_fn = sum(c["fn"] for c in result["per_category"].values())
    assert total_fn == len(missing["segments_info"])
    assert result["all"]["pq"] < 1.0
