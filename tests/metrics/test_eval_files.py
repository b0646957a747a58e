"""evaluate_files: semantic label folders, COCO instances + results, COCO panoptic JSON + PNG folders."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segbench.data import IGNORE_INDEX, ShapesDataset, id_to_rgb, read_panoptic_png, write_shapes_dataset
from segbench.errors import ConfigError, DatasetError
from segbench.metrics.files import evaluate_files

NUM_IMAGES = 6
SIZE = 64

# pycocotools' RLE decode trips a numpy 2 DeprecationWarning inside its Cython code, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, list]:
    """The synthetic dataset on disk (ground truth for every task) and its samples in memory."""
    dataset = ShapesDataset(NUM_IMAGES, SIZE, SIZE, seed=3)
    root = write_shapes_dataset(tmp_path_factory.mktemp("shapes"), dataset)
    return root, list(dataset)


def one_line_error(exc_type, *args, **kwargs) -> str:
    """Run evaluate_files, expecting ``exc_type`` with a one-line message; return the message."""
    with pytest.raises(exc_type) as info:
        evaluate_files(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def json_round_trip(result: dict) -> dict:
    """Results must be strict JSON (no NaN); return what a reader of the CLI's output sees."""
    return json.loads(json.dumps(result, allow_nan=False))


# --------------------------------------------------------------------------------------------------
# Semantic


def write_labels(directory: Path, labels: dict[str, np.ndarray], palette: bool = False) -> Path:
    """Label PNGs, grayscale ("L") or palette ("P", colours unrelated to the indices)."""
    directory.mkdir(parents=True, exist_ok=True)
    colours = np.random.default_rng(7).integers(0, 256, 768, dtype=np.uint8)
    for name, label in labels.items():
        label = np.ascontiguousarray(label, dtype=np.uint8)
        if palette:
            img = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
            img.putpalette(colours.tolist())
        else:
            img = Image.fromarray(label)
        img.save(directory / name, format="PNG")
    return directory


def numpy_semantic(gts: list[np.ndarray], preds: list[np.ndarray], ignore: int = IGNORE_INDEX) -> dict:
    """mIoU / pixel accuracy / mean Dice from per-class boolean masks (no confusion matrix)."""
    gt = np.concatenate([g.ravel() for g in gts]).astype(np.int64)
    pred = np.concatenate([p.ravel() for p in preds]).astype(np.int64)
    valid = gt != ignore
    gt, pred = gt[valid], pred[valid]
    ious, dices = [], []
    for c in np.union1d(np.unique(gt), np.unique(pred)):
        in_gt, in_pred = gt == c, pred == c
        intersection = np.count_nonzero(in_gt & in_pred)
        ious.append(intersection / np.count_nonzero(in_gt | in_pred))
        dices.append(2 * intersection / (np.count_nonzero(in_gt) + np.count_nonzero(in_pred)))
    return {
        "miou": float(np.mean(ious)),
        "pixel_accuracy": np.count_nonzero(gt == pred) / gt.size,
        "mean_dice": float(np.mean(dices)),
    }


def test_semantic_perfect_prediction(shapes):
    root, samples = shapes
    result = evaluate_files("semantic", root / "semantic", root / "semantic")
    labelled = np.concatenate([s.semantic[s.semantic != IGNORE_INDEX] for s in samples])
    assert result == {
        "task": "semantic",
        "num_images": NUM_IMAGES,
        "num_classes": int(labelled.max()) + 1,
        "ignore_index": IGNORE_INDEX,
        "miou": 1.0,
        "pixel_accuracy": 1.0,
        "mean_dice": 1.0,
    }
    assert json_round_trip(result) == result


def relabelled(samples: list) -> dict[str, np.ndarray]:
    """Predictions: the ground truth with whole classes and a block relabelled, void filled in."""
    preds = {}
    for k, sample in enumerate(samples):
        pred = sample.semantic.copy()
        if k % 3 == 0:
            pred[pred == 1] = 2  # ground predicted as water
        elif k % 3 == 1:
            pred[:20, :20] = 3  # a circle painted over the top-left corner
        else:
            pred[pred == 5] = 4  # triangles predicted as rectangles
        pred[sample.semantic == IGNORE_INDEX] = 0  # anything goes on void pixels
        preds[f"{sample.name}.png"] = pred
    return preds


def test_semantic_relabelled_palette_prediction_matches_numpy(shapes, tmp_path):
    root, samples = shapes
    preds = relabelled(samples)
    pred_dir = write_labels(tmp_path / "pred", preds, palette=True)
    expected = numpy_semantic([s.semantic for s in samples], [preds[f"{s.name}.png"] for s in samples])
    assert expected["miou"] < 0.95  # the relabelling is visible in the metric

    result = evaluate_files("semantic", root / "semantic", pred_dir)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12, abs=0)

    # More classes than occur: absent classes are left out of the means, so nothing changes.
    wide = evaluate_files("semantic", root / "semantic", pred_dir, num_classes=9)
    assert wide["num_classes"] == 9
    for key, value in expected.items():
        assert wide[key] == pytest.approx(value, rel=1e-12, abs=0)


def test_semantic_hand_computed_case_with_void(tmp_path):
    # Labelled pixels: class 0 at (0,0) and (0,1), class 1 on the second row; (0,2) is void.
    gt = np.array([[0, 0, 255], [1, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 0], [1, 1, 1]], np.uint8)
    gt_dir = write_labels(tmp_path / "gt", {"a.png": gt})
    pred_dir = write_labels(tmp_path / "pred", {"a.png": pred}, palette=True)
    result = evaluate_files("semantic", gt_dir, pred_dir)
    # class 0: TP 1, |gt| 2, |pred| 1 -> IoU 1/2, Dice 2/3; class 1: TP 3, |gt| 3, |pred| 4 -> 3/4, 6/7.
    assert result["num_classes"] == 2
    assert result["miou"] == pytest.approx((1 / 2 + 3 / 4) / 2, rel=1e-12, abs=0)
    assert result["pixel_accuracy"] == pytest.approx(4 / 5, rel=1e-12, abs=0)
    assert result["mean_dice"] == pytest.approx((2 / 3 + 6 / 7) / 2, rel=1e-12, abs=0)

    # With ignore_index=0, class-0 pixels of the ground truth are the void instead: class 0 then
    # only exists in the prediction (IoU 0) and 255 is an ordinary class.
    other = evaluate_files("semantic", gt_dir, pred_dir, ignore_index=0)
    assert other["num_classes"] == 256
    # Labelled: (0,2) 255 -> 0, second row 1 -> 1. Class 0: IoU 0; class 1: 3/3; class 255: 0/1.
    assert other["miou"] == pytest.approx(1 / 3, rel=1e-12, abs=0)
    assert other["pixel_accuracy"] == pytest.approx(3 / 4, rel=1e-12, abs=0)


def make_semantic_case(tmp_path: Path, case: str) -> tuple[Path, Path, dict, str]:
    """Ground-truth and prediction folders broken in one way, the kwargs, and a message fragment."""
    label = np.zeros((8, 8), np.uint8)
    label[4:] = 2
    gt = write_labels(tmp_path / "gt", {"a.png": label, "b.png": label})
    pred_labels = {"a.png": label, "b.png": label}
    kwargs: dict = {}
    if case == "missing folder":
        return gt, tmp_path / "nowhere", kwargs, "nowhere"
    if case == "missing prediction":
        pred_labels.pop("b.png")
        fragment = "b.png"
    elif case == "prediction without ground truth":
        pred_labels["c.png"] = label
        fragment = "c.png"
    elif case == "size mismatch":
        pred_labels["b.png"] = np.zeros((8, 9), np.uint8)
        fragment = "is 9x8"  # width x height
    elif case == "too few classes for the ground truth":
        kwargs["num_classes"] = 2
        fragment = "class 2"
    elif case == "void in the prediction":
        bad = label.copy()
        bad[0, 0] = 255
        pred_labels["b.png"] = bad
        fragment = "predicted class 255 is outside [0, 3)"
    elif case == "class beyond num_classes in the prediction":
        bad = label.copy()
        bad[0, 0] = 7
        pred_labels["b.png"] = bad
        kwargs["num_classes"] = 5
        fragment = "predicted class 7 is outside [0, 5)"
    else:
        raise AssertionError(case)
    pred = write_labels(tmp_path / "pred", pred_labels)
    return gt, pred, kwargs, fragment


@pytest.mark.parametrize(
    "case",
    [
        "missing folder",
        "missing prediction",
        "prediction without ground truth",
        "size mismatch",
        "too few classes for the ground truth",
        "void in the prediction",
        "class beyond num_classes in the prediction",
    ],
)
def test_semantic_bad_input(tmp_path, case):
    gt, pred, kwargs, fragment = make_semantic_case(tmp_path, case)
    message = one_line_error(DatasetError, "semantic", gt, pred, **kwargs)
    assert fragment in message


def test_semantic_refuses_to_infer_a_huge_class_count(tmp_path):
    ids = np.full((4, 4), 40000, np.uint16)  # e.g. an instance-id map passed by mistake
    for side in ("gt", "pred"):
        (tmp_path / side).mkdir()
        Image.fromarray(ids).save(tmp_path / side / "a.png")
    message = one_line_error(DatasetError, "semantic", tmp_path / "gt", tmp_path / "pred")
    assert "class 40000" in message and "num_classes" in message


def test_semantic_rgb_png_is_not_a_label_map(tmp_path):
    gt = write_labels(tmp_path / "gt", {"a.png": np.zeros((4, 4), np.uint8)})
    (tmp_path / "pred").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "pred" / "a.png")
    message = one_line_error(DatasetError, "semantic", gt, tmp_path / "pred")
    assert "'RGB'" in message and "a.png" in message


# --------------------------------------------------------------------------------------------------
# Instance


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def perturbed_results(gt: dict) -> list[dict]:
    """GT instances with every 4th dropped, every 4th shifted by 3 px, random scores and one FP."""
    rng = np.random.default_rng(0)
    results = []
    for k, ann in enumerate(gt["annotations"]):
        if k % 4 == 3:
            continue
        box = list(ann["bbox"])
        mask = mask_utils.decode(ann["segmentation"]).astype(bool)
        if k % 4 == 1:
            box[0] += 3
            mask = np.roll(mask, 3, axis=1)
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "score": float(rng.uniform(0.2, 1.0)),
                "bbox": box,
                "segmentation": encode(mask),
            }
        )
    first = gt["annotations"][0]
    wrong_category = next(c["id"] for c in gt["categories"] if c["id"] != first["category_id"])
    results.append({**results[0], "category_id": wrong_category, "score": 0.99})
    return results


def cocoeval_stats(gt_path: Path, results_path: Path, iou_type: str) -> list[float]:
    """AP, AP50, AP75 straight from pycocotools on the files."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(str(results_path))
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats[:3]]


def strip(results: list[dict], key: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != key} for r in results]


@pytest.mark.parametrize(
    ("variant", "iou_types"),
    [("both", ["bbox", "segm"]), ("boxes only", ["bbox"]), ("masks only", ["segm"])],
)
def test_instance_matches_cocoeval(shapes, tmp_path, variant, iou_types):
    root, _ = shapes
    gt_path = root / "instances.json"
    results = perturbed_results(json.loads(gt_path.read_text()))
    if variant == "boxes only":
        results = strip(results, "segmentation")
    elif variant == "masks only":
        results = strip(results, "bbox")
    pred_path = write_json(tmp_path / "results.json", results)

    result = evaluate_files("instance", gt_path, pred_path)
    assert result["task"] == "instance"
    assert result["num_images"] == NUM_IMAGES
    assert result["num_results"] == len(results)
    assert result["iou_types"] == iou_types
    metric_keys = {k for k in result if k.startswith(("bbox_", "segm_"))}
    assert metric_keys == {f"{t}_{s}" for t in iou_types for s in ("ap", "ap50", "ap75")}
    for iou_type in iou_types:
        ap, ap50, ap75 = cocoeval_stats(gt_path, pred_path, iou_type)
        assert 0.0 < ap < 1.0  # the perturbations matter
        assert result[f"{iou_type}_ap"] == ap
        assert result[f"{iou_type}_ap50"] == ap50
        assert result[f"{iou_type}_ap75"] == ap75
    assert json_round_trip(result) == result


def test_instance_perfect_and_empty_results(shapes, tmp_path):
    root, _ = shapes
    gt_path = root / "instances.json"
    gt = json.loads(gt_path.read_text())
    keys = ("image_id", "category_id", "bbox", "segmentation")
    perfect = [{**{k: ann[k] for k in keys}, "score": 1.0} for ann in gt["annotations"]]
    result = evaluate_files("instance", gt_path, write_json(tmp_path / "perfect.json", perfect))
    for key in ("bbox_ap", "bbox_ap50", "bbox_ap75", "segm_ap", "segm_ap50", "segm_ap75"):
        assert result[key] == 1.0
    empty = evaluate_files("instance", gt_path, write_json(tmp_path / "empty.json", []))
    assert empty["bbox_ap"] == 0.0 and empty["segm_ap"] == 0.0
    assert empty["num_results"] == 0


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("unknown image", "image id(s) not in the ground truth"),
        ("unknown category", "category id(s) not in the ground truth"),
        ("object instead of list", "expected a JSON list"),
        ("malformed JSON", "invalid JSON"),
        ("some masks missing", "'segmentation'"),
        ("no score", "'score'"),
        ("image id of the wrong type", "'image_id' must be an integer or a string"),
        ("mask of the wrong size", "segmentation size"),
        ("missing ground truth", "not found"),
    ],
)
def test_instance_bad_input(shapes, tmp_path, case, fragment):
    root, _ = shapes
    gt_path = root / "instances.json"
    results = perturbed_results(json.loads(gt_path.read_text()))
    pred_path = tmp_path / "results.json"
    if case == "unknown image":
        results[1]["image_id"] = 999
    elif case == "unknown category":
        results[1]["category_id"] = 77
    elif case == "some masks missing":
        del results[2]["segmentation"]
    elif case == "no score":
        del results[0]["score"]
    elif case == "image id of the wrong type":
        results[0]["image_id"] = [1]
    elif case == "mask of the wrong size":
        results[0]["segmentation"] = encode(np.ones((SIZE, SIZE + 1), bool))
    elif case == "missing ground truth":
        gt_path = tmp_path / "absent.json"
    write_json(pred_path, {"annotations": results} if case == "object instead of list" else results)
    if case == "malformed JSON":
        pred_path.write_text('[{"image_id": 1,', encoding="utf-8")
    message = one_line_error(DatasetError, "instance", gt_path, pred_path)
    assert fragment in message


# --------------------------------------------------------------------------------------------------
# Panoptic

HAND_CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "sky", "isthing": 0},
    {"id": 3, "name": "tree", "isthing": 0},  # never present: left out of the means
]


def row(*spans: tuple[int, int, int], width: int = 20) -> np.ndarray:
    """A 1 x width id map with ``id`` on columns ``[start, stop)`` for each (id, start, stop)."""
    ids = np.zeros((1, width), np.int64)
    for segment_id, start, stop in spans:
        ids[0, start:stop] = segment_id
    return ids


def seg(segment_id: int, category_id: int) -> dict:
    return {"id": segment_id, "category_id": category_id, "iscrowd": 0}


def write_panoptic(
    json_path: Path, png_dir: Path, images: dict[int, tuple[np.ndarray, list]], full: bool, prefix: str
) -> Path:
    """A COCO panoptic JSON (``full``: with images and categories, else annotations only) + PNGs."""
    png_dir.mkdir(parents=True, exist_ok=True)
    annotations = []
    for image_id, (ids, segments) in images.items():
        file_name = f"{prefix}{image_id}.png"
        Image.fromarray(id_to_rgb(ids)).save(png_dir / file_name)
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
    data: dict = {"annotations": annotations}
    if full:
        data["images"] = [
            {"id": i, "file_name": f"{i}.jpg", "height": ids.shape[0], "width": ids.shape[1]}
            for i, (ids, _) in images.items()
        ]
        data["categories"] = HAND_CATEGORIES
    return write_json(json_path, data)


# Image 1: person IoU 8/10 (TP), sky IoU 10/12 (TP).
# Image 2: the GT person is missed (FN); a predicted person lying wholly in GT void (columns 6..9) is
# ignored; a predicted person inside the GT sky is a FP; the predicted sky overlaps the GT sky on 6
# pixels with nothing in void: IoU 6/10 (TP).
# Image 3: no prediction at all, so its GT sky is a FN.
HAND_GT = {
    1: (row((1, 0, 10), (2, 10, 20)), [seg(1, 1), seg(2, 2)]),
    2: (row((1, 0, 6), (2, 10, 20)), [seg(1, 1), seg(2, 2)]),
    3: (row((4, 0, 20)), [seg(4, 2)]),
}
HAND_PRED = {
    1: (row((5, 0, 8), (6, 8, 20)), [seg(5, 1), seg(6, 2)]),
    2: (row((9, 6, 10), (8, 10, 12), (7, 12, 16), (8, 16, 20)), [seg(9, 1), seg(8, 2), seg(7, 1)]),
}


def check_hand_case(result: dict) -> None:
    person_pq, person_sq, person_rq = 0.8 / 2, 0.8, 1 / 2  # TP 1 (IoU 0.8), FP 1, FN 1
    sky_iou = 10 / 12 + 6 / 10  # TP 2, FN 1
    sky_pq, sky_sq, sky_rq = sky_iou / 2.5, sky_iou / 2, 2 / 2.5
    exact = {"rel": 1e-12, "abs": 0}
    assert result["task"] == "panoptic"
    assert result["num_images"] == 3
    assert result["images_without_prediction"] == 1
    person = result["per_category"]["1"]
    sky = result["per_category"]["2"]
    assert (person["tp"], person["fp"], person["fn"]) == (1, 1, 1)
    assert (sky["tp"], sky["fp"], sky["fn"]) == (2, 0, 1)
    assert person["pq"] == pytest.approx(person_pq, **exact)
    assert person["sq"] == pytest.approx(person_sq, **exact)
    assert person["rq"] == pytest.approx(person_rq, **exact)
    assert sky["pq"] == pytest.approx(sky_pq, **exact)
    assert sky["sq"] == pytest.approx(sky_sq, **exact)
    assert sky["rq"] == pytest.approx(sky_rq, **exact)
    assert result["all"] == {
        "pq": pytest.approx((person_pq + sky_pq) / 2, **exact),
        "sq": pytest.approx((person_sq + sky_sq) / 2, **exact),
        "rq": pytest.approx((person_rq + sky_rq) / 2, **exact),
        "n": 2,
    }
    assert result["things"]["pq"] == pytest.approx(person_pq, **exact) and result["things"]["n"] == 1
    assert result["stuff"]["pq"] == pytest.approx(sky_pq, **exact) and result["stuff"]["n"] == 1
    # The absent category: undefined, written as JSON null.
    assert result["per_category"]["3"]["pq"] is None
    assert json_round_trip(result) == result


def test_panoptic_hand_computed_case_in_coco_layout(tmp_path):
    gt = write_panoptic(tmp_path / "gt.json", tmp_path / "gt", HAND_GT, full=True, prefix="")
    pred = write_panoptic(tmp_path / "pred.json", tmp_path / "pred", HAND_PRED, full=False, prefix="p")
    check_hand_case(evaluate_files("panoptic", gt, pred))


def test_panoptic_explicit_png_dirs(tmp_path):
    gt = write_panoptic(tmp_path / "json" / "gt.json", tmp_path / "gt_png", HAND_GT, full=True, prefix="")
    pred = write_panoptic(
        tmp_path / "json" / "pred.json", tmp_path / "pr_png", HAND_PRED, full=True, prefix=""
    )
    check_hand_case(
        evaluate_files("panoptic", gt, pred, gt_dir=tmp_path / "gt_png", pred_dir=tmp_path / "pr_png")
    )
    # Without the dirs, the COCO layout's json/gt/ folder is looked for, and it does not exist.
    message = one_line_error(DatasetError, "panoptic", gt, pred, pred_dir=tmp_path / "pr_png")
    assert "panoptic PNG directory not found" in message and str(tmp_path / "json" / "gt") in message


def renumbered_prediction(root: Path, out: Path, drop_thing: bool) -> tuple[Path, dict | None]:
    """The GT panoptic annotations with new segment ids (pred.json + pred/); optionally one thing removed."""
    gt = json.loads((root / "panoptic.json").read_text())
    (out / "pred").mkdir(parents=True)
    dropped = None
    annotations = []
    for ann in gt["annotations"]:
        gt_ids = read_panoptic_png(root / "panoptic" / ann["file_name"])
        ids = np.zeros_like(gt_ids)
        segments = []
        for k, info in enumerate(ann["segments_info"]):
            category = next(c for c in gt["categories"] if c["id"] == info["category_id"])
            if drop_thing and dropped is None and category["isthing"]:
                dropped = info  # its pixels stay 0: unlabelled
                continue
            ids[gt_ids == info["id"]] = 1000 + k
            segments.append({"id": 1000 + k, "category_id": info["category_id"]})
        Image.fromarray(id_to_rgb(ids)).save(out / "pred" / ann["file_name"])
        annotations.append(
            {"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segments}
        )
    return write_json(out / "pred.json", {"annotations": annotations}), dropped


def segment_counts(root: Path) -> dict[str, int]:
    gt = json.loads((root / "panoptic.json").read_text())
    counts: dict[str, int] = {}
    for ann in gt["annotations"]:
        for info in ann["segments_info"]:
            counts[str(info["category_id"])] = counts.get(str(info["category_id"]), 0) + 1
    return counts


def test_panoptic_perfect_prediction_on_shapes(shapes, tmp_path):
    root, _ = shapes
    pred, _ = renumbered_prediction(root, tmp_path, drop_thing=False)
    result = evaluate_files("panoptic", root / "panoptic.json", pred)
    counts = segment_counts(root)
    for group in ("all", "things", "stuff"):
        assert (result[group]["pq"], result[group]["sq"], result[group]["rq"]) == (1.0, 1.0, 1.0)
    assert result["all"]["n"] == len(counts)
    for category_id, row_ in result["per_category"].items():
        assert (row_["tp"], row_["fp"], row_["fn"]) == (counts.get(category_id, 0), 0, 0)
    assert result["images_without_prediction"] == 0


def test_panoptic_missed_thing_on_shapes(shapes, tmp_path):
    root, _ = shapes
    pred, dropped = renumbered_prediction(root, tmp_path, drop_thing=True)
    assert dropped is not None
    result = evaluate_files("panoptic", root / "panoptic.json", pred)
    tp = segment_counts(root)[str(dropped["category_id"])] - 1
    category = result["per_category"][str(dropped["category_id"])]
    assert (category["tp"], category["fp"], category["fn"]) == (tp, 0, 1)
    # Every match is perfect (IoU 1), so PQ = TP / (TP + FN/2).
    assert category["pq"] == pytest.approx(tp / (tp + 0.5), rel=1e-12, abs=0)
    assert result["things"]["pq"] < 1.0 and result["stuff"]["pq"] == 1.0


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("prediction for an unknown image", "image id(s) with no ground-truth annotation"),
        ("missing prediction PNG folder", "panoptic PNG directory not found"),
        ("missing prediction PNG", "p1.png not found"),
        ("malformed ground-truth JSON", "invalid JSON"),
        ("id missing from segments_info", "not in segments_info"),
        ("unknown category", "unknown category_id 9"),
        ("no annotations", "'annotations'"),
    ],
)
def test_panoptic_bad_input(tmp_path, case, fragment):
    gt = write_panoptic(tmp_path / "gt.json", tmp_path / "gt", HAND_GT, full=True, prefix="")
    pred_images = dict(HAND_PRED)
    if case == "prediction for an unknown image":
        pred_images[42] = HAND_PRED[1]
    elif case == "id missing from segments_info":
        pred_images[1] = (HAND_PRED[1][0], [seg(5, 1)])
    elif case == "unknown category":
        pred_images[1] = (HAND_PRED[1][0], [seg(5, 1), seg(6, 9)])
    pred = write_panoptic(tmp_path / "pred.json", tmp_path / "pred", pred_images, full=False, prefix="p")
    if case == "missing prediction PNG folder":
        shutil.rmtree(tmp_path / "pred")
    elif case == "missing prediction PNG":
        (tmp_path / "pred" / "p1.png").unlink()
    elif case == "malformed ground-truth JSON":
        gt.write_text("{", encoding="utf-8")
    elif case == "no annotations":
        write_json(pred, {"images": []})
    message = one_line_error(DatasetError, "panoptic", gt, pred)
    assert fragment in message


# --------------------------------------------------------------------------------------------------
# Options


def test_unknown_task(tmp_path):
    message = one_line_error(ConfigError, "detection", tmp_path, tmp_path)
    assert "'detection'" in message and "semantic, instance, panoptic" in message


@pytest.mark.parametrize(
    ("task", "kwargs"),
    [
        ("semantic", {"gt_dir": Path("x")}),
        ("instance", {"pred_dir": Path("x")}),
        ("instance", {"num_classes": 3}),
        ("panoptic", {"ignore_index": 0}),
        ("semantic", {"num_classes": 0}),
    ],
)
def test_options_that_do_not_apply(tmp_path, task, kwargs):
    message = one_line_error(ConfigError, task, tmp_path, tmp_path, **kwargs)
    assert next(iter(kwargs)) in message
