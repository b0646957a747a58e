"""Panoptic quality (PQ = SQ x RQ) following Kirillov et al. and the COCO panoptic evaluation.

Written here from the definition because panopticapi (the reference ``pq_compute``) is not on
PyPI. The rules are COCO's:

1. Ground-truth pixels with id 0 are VOID. Prediction pixels with id 0 are unlabelled (no segment).
2. A predicted and a ground-truth segment of the same category match when IoU > 0.5 (strictly),
   where the predicted pixels lying in VOID are removed from the union. IoU > 0.5 makes matches
   unique, so no assignment search is needed.
3. Crowd ground-truth segments (``iscrowd=1``) are never matched and never false negatives.
4. Unmatched non-crowd ground-truth segments are false negatives.
5. An unmatched prediction is a false positive unless more than half of its area lies in VOID plus
   the crowd regions of its own category; then it is ignored.
6. Per category, over all images together: PQ = sum(IoU) / (TP + FP/2 + FN/2), SQ = sum(IoU) / TP,
   RQ = TP / (TP + FP/2 + FN/2). A category with TP + FP + FN = 0 is left out of the averages
   (its per-category values are NaN); one with TP = 0 but some FP/FN counts as 0.
7. "all", "things" and "stuff" are plain means over the counted categories, with ``n`` the number
   counted; a mean over no category is NaN (panopticapi reports 0 there).

Segment ids listed in ``segments_info`` but absent from the id map have area 0 and are skipped,
including ground-truth ones (panopticapi would count those as false negatives with the JSON area).
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segbench.data.readers import read_panoptic_png

VOID = 0
_MATCH_IOU = 0.5


@dataclass(eq=False)
class PanopticImage:
    """One image's segment-id map (HxW ints, 0 = void/unlabelled) and its ``segments_info``.

    ``image_id`` is optional and only used in error messages. ``eq=False``: ``id_map`` is an array.
    """

    id_map: np.ndarray
    segments: list[dict[str, Any]]
    image_id: Any = field(default=None)


@dataclass
class _CategoryCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0


def _where(image: PanopticImage, side: str) -> str:
    return f"{side} image {image.image_id}" if image.image_id is not None else f"{side} image"


def _segments_by_id(
    image: PanopticImage, side: str, categories: dict[int, dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    segments: dict[int, dict[str, Any]] = {}
    for info in image.segments:
        segment_id = int(info["id"])
        if segment_id == VOID:
            raise ValueError(f"{_where(image, side)}: segment id 0 is reserved for void/unlabelled pixels")
        if segment_id in segments:
            raise ValueError(f"{_where(image, side)}: segment id {segment_id} is listed twice")
        category_id = int(info["category_id"])
        if category_id not in categories:
            raise ValueError(
                f"{_where(image, side)}: segment {segment_id} has unknown category {category_id}"
            )
        segments[segment_id] = info
    return segments


def _id_map(image: PanopticImage, side: str) -> np.ndarray:
    id_map = np.asarray(image.id_map)
    if id_map.ndim != 2:
        raise ValueError(
            f"{_where(image, side)}: id map must be HxW, got shape {id_map.shape} "
            "(convert panoptic RGB with segbench.data.rgb_to_id)"
        )
    if not np.issubdtype(id_map.dtype, np.integer):
        raise ValueError(f"{_where(image, side)}: id map must hold integers, got {id_map.dtype}")
    if id_map.size and int(id_map.min()) < 0:
        raise ValueError(f"{_where(image, side)}: id map holds negative ids")
    return id_map.astype(np.int64, copy=False)


def _accumulate_image(
    gt: PanopticImage,
    pred: PanopticImage,
    categories: dict[int, dict[str, Any]],
    counts: dict[int, _CategoryCounts],
) -> None:
    """Add one image's TP/FP/FN/IoU to ``counts``."""
    gt_map, pred_map = _id_map(gt, "ground-truth"), _id_map(pred, "prediction")
    if gt_map.shape != pred_map.shape:
        raise ValueError(
            f"{_where(gt, 'ground-truth')}: id map shape {gt_map.shape} differs from the prediction's "
            f"{pred_map.shape}"
        )
    gt_segments = _segments_by_id(gt, "ground-truth", categories)
    pred_segments = _segments_by_id(pred, "prediction", categories)

    # Overlap table of (gt id, pred id) pairs from a single np.unique over combined ids.
    offset = int(pred_map.max()) + 1 if pred_map.size else 1
    gt_max = int(gt_map.max()) if gt_map.size else 0
    if gt_max * offset + offset - 1 >= 2**63:
        raise ValueError("segment ids too large to combine in int64")
    pairs, pair_counts = np.unique(gt_map * offset + pred_map, return_counts=True)

    gt_area: dict[int, int] = defaultdict(int)
    pred_area: dict[int, int] = defaultdict(int)
    overlap: dict[tuple[int, int], int] = {}
    for pair, count in zip(pairs.tolist(), pair_counts.tolist(), strict=True):
        gt_id, pred_id = divmod(pair, offset)
        gt_area[gt_id] += count
        pred_area[pred_id] += count
        overlap[gt_id, pred_id] = count

    for gt_id in gt_area:
        if gt_id != VOID and gt_id not in gt_segments:
            raise ValueError(
                f"{_where(gt, 'ground-truth')}: id {gt_id} is in the map but not in segments_info"
            )
    for pred_id in pred_area:
        if pred_id != VOID and pred_id not in pred_segments:
            raise ValueError(
                f"{_where(pred, 'prediction')}: id {pred_id} is in the map but not in segments_info"
            )

    matched_gt: set[int] = set()
    matched_pred: set[int] = set()
    for (gt_id, pred_id), intersection in overlap.items():
        if gt_id == VOID or pred_id == VOID:
            continue
        gt_info, pred_info = gt_segments[gt_id], pred_segments[pred_id]
        if gt_info.get("iscrowd", 0) or gt_info["category_id"] != pred_info["category_id"]:
            continue
        union = pred_area[pred_id] + gt_area[gt_id] - intersection - overlap.get((VOID, pred_id), 0)
        iou = intersection / union
        if iou > _MATCH_IOU:
            category = counts[int(gt_info["category_id"])]
            category.tp += 1
            category.iou_sum += iou
            matched_gt.add(gt_id)
            matched_pred.add(pred_id)

    # Crowd pixels per (category, pred id), to excuse predictions inside a crowd region of their class.
    crowd_overlap: dict[tuple[int, int], int] = defaultdict(int)
    for (gt_id, pred_id), intersection in overlap.items():
        if gt_id != VOID and pred_id != VOID and gt_segments[gt_id].get("iscrowd", 0):
            crowd_overlap[int(gt_segments[gt_id]["category_id"]), pred_id] += intersection

    for gt_id, info in gt_segments.items():
        # Listed ids with no pixels (gt_id not in gt_area) are skipped, as documented above.
        if gt_id in gt_area and gt_id not in matched_gt and not info.get("iscrowd", 0):
            counts[int(info["category_id"])].fn += 1
    for pred_id, info in pred_segments.items():
        if pred_id not in pred_area or pred_id in matched_pred:
            continue
        category_id = int(info["category_id"])
        ignored = overlap.get((VOID, pred_id), 0) + crowd_overlap.get((category_id, pred_id), 0)
        if ignored / pred_area[pred_id] <= 0.5:
            counts[category_id].fp += 1


def _category_table(categories: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    table: dict[int, dict[str, Any]] = {}
    for category in categories:
        category_id = int(category["id"])
        if category_id in table:
            raise ValueError(f"category id {category_id} is listed twice")
        if "isthing" not in category:
            raise ValueError(f"category {category_id} needs 'isthing' (0 or 1)")
        table[category_id] = category
    return table


def pq_sq_rq(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PQ, SQ and RQ per category from ``[..., 4]`` arrays of (TP, FP, FN, IoU sum); NaN where a
    category has TP + FP + FN = 0."""
    counts = np.asarray(counts, np.float64)
    tp, fp, fn, iou_sum = (counts[..., i] for i in range(4))
    denominator = tp + 0.5 * fp + 0.5 * fn
    counted = denominator > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        pq = np.where(counted, iou_sum / np.where(counted, denominator, 1), np.nan)
        rq = np.where(counted, tp / np.where(counted, denominator, 1), np.nan)
        sq = np.where(counted, np.where(tp > 0, iou_sum / np.where(tp > 0, tp, 1), 0.0), np.nan)
    return pq, sq, rq


def _summarise(categories: dict[int, dict[str, Any]], counts: dict[int, _CategoryCounts]) -> dict[str, Any]:
    per_category: dict[int, dict[str, Any]] = {}
    for category_id, category in categories.items():
        c = counts[category_id]
        pq, sq, rq = (float(v) for v in pq_sq_rq(np.array([c.tp, c.fp, c.fn, c.iou_sum])))
        per_category[category_id] = {
            "name": category.get("name", str(category_id)),
            "isthing": bool(category["isthing"]),
            "pq": pq,
            "sq": sq,
            "rq": rq,
            "tp": c.tp,
            "fp": c.fp,
            "fn": c.fn,
        }

    def average(selected: list[dict[str, Any]]) -> dict[str, Any]:
        counted = [row for row in selected if not math.isnan(row["pq"])]
        if not counted:
            return {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}
        means = {key: float(np.mean([row[key] for row in counted])) for key in ("pq", "sq", "rq")}
        return {**means, "n": len(counted)}

    rows = list(per_category.values())
    return {
        "all": average(rows),
        "things": average([row for row in rows if row["isthing"]]),
        "stuff": average([row for row in rows if not row["isthing"]]),
        "per_category": per_category,
    }


def _pq_from_pairs(
    pairs: Iterable[tuple[PanopticImage, PanopticImage]], categories: list[dict[str, Any]]
) -> dict[str, Any]:
    table = _category_table(categories)
    counts: dict[int, _CategoryCounts] = defaultdict(_CategoryCounts)
    for gt, pred in pairs:
        _accumulate_image(gt, pred, table, counts)
    return _summarise(table, counts)


def panoptic_counts(
    pairs: Iterable[tuple[PanopticImage, PanopticImage]], categories: list[dict[str, Any]]
) -> np.ndarray:
    """Per image, per category (in ``categories``' order): TP, FP, FN and IoU sum, ``[N, K, 4]``."""
    table = _category_table(categories)
    rows = []
    for gt, pred in pairs:
        counts: dict[int, _CategoryCounts] = defaultdict(_CategoryCounts)
        _accumulate_image(gt, pred, table, counts)
        rows.append([[c.tp, c.fp, c.fn, c.iou_sum] for c in (counts[k] for k in table)])
    return np.asarray(rows, np.float64).reshape(len(rows), len(table), 4)


class PanopticStats:
    """Per-image TP/FP/FN/IoU sums per category: PQ, SQ, RQ ("all", the mean over counted
    categories) of any weighting of the images are those of the weighted sums."""

    def __init__(self, counts: np.ndarray, names: list[str]) -> None:
        self.counts = np.asarray(counts, np.float64)
        self.names = list(names)

    def __len__(self) -> int:
        return len(self.names)

    def metrics(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """``pq``, ``sq``, ``rq`` per row of ``weights`` (``[R, N]`` image multiplicities)."""
        totals = np.einsum("rn,nkc->rkc", np.asarray(weights, np.float64), self.counts)
        values = pq_sq_rq(totals)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no counted category: NaN
            return {name: np.nanmean(v, axis=-1) for name, v in zip(("pq", "sq", "rq"), values, strict=True)}

    def concat(self, other: PanopticStats) -> PanopticStats:
        return PanopticStats(np.concatenate([self.counts, other.counts]), self.names + other.names)


def pq_compute(
    ground_truth: Iterable[PanopticImage],
    predictions: Iterable[PanopticImage],
    categories: list[dict[str, Any]],
) -> dict[str, Any]:
    """PQ/SQ/RQ over images paired in order, with TP/FP/FN/IoU summed per category over all images.

    ``categories`` are dicts with ``id`` and ``isthing`` (``name`` optional). Returns
    ``{"all"|"things"|"stuff": {"pq", "sq", "rq", "n"}, "per_category": {id: {"name", "isthing",
    "pq", "sq", "rq", "tp", "fp", "fn"}}}`` with fractions in [0, 1].
    """
    missing = object()

    def paired() -> Iterator[tuple[PanopticImage, PanopticImage]]:
        for gt, pred in itertools.zip_longest(ground_truth, predictions, fillvalue=missing):
            if gt is missing or pred is missing:
                raise ValueError("ground_truth and predictions have different numbers of images")
            yield gt, pred  # type: ignore[misc]  # neither is the fill value: both are images

    return _pq_from_pairs(paired(), categories)


def _annotations_by_image(data: dict[str, Any], what: str) -> dict[Any, dict[str, Any]]:
    by_image: dict[Any, dict[str, Any]] = {}
    for ann in data["annotations"]:
        if ann["image_id"] in by_image:
            raise ValueError(f"{what} has two annotations for image_id {ann['image_id']}")
        by_image[ann["image_id"]] = ann
    return by_image


def pq_from_coco(
    gt_json: dict[str, Any],
    gt_png_dir: str | os.PathLike[str],
    pred_json: dict[str, Any],
    pred_png_dir: str | os.PathLike[str],
) -> dict[str, Any]:
    """:func:`pq_compute` on COCO panoptic dicts and their PNG folders, images matched by ``image_id``.

    Categories come from ``gt_json``. A ground-truth image without a prediction counts all its
    segments as false negatives; a prediction for an image absent from the ground truth is an error.
    PNGs are read one image at a time.
    """
    gt_by_image = _annotations_by_image(gt_json, "ground truth")
    pred_by_image = _annotations_by_image(pred_json, "predictions")
    extra = set(pred_by_image) - set(gt_by_image)
    if extra:
        extra_ids = sorted(extra, key=str)[:10]
        raise ValueError(f"predictions for image ids absent from the ground truth: {extra_ids}")
    gt_dir, pred_dir = Path(gt_png_dir), Path(pred_png_dir)

    def pairs() -> Iterator[tuple[PanopticImage, PanopticImage]]:
        for image_id, gt_ann in gt_by_image.items():
            gt_map = read_panoptic_png(gt_dir / gt_ann["file_name"])
            gt = PanopticImage(gt_map, gt_ann["segments_info"], image_id)
            pred_ann = pred_by_image.get(image_id)
            if pred_ann is None:
                pred = PanopticImage(np.zeros_like(gt_map), [], image_id)
            else:
                pred_map = read_panoptic_png(pred_dir / pred_ann["file_name"])
                pred = PanopticImage(pred_map, pred_ann["segments_info"], image_id)
            yield gt, pred

    return _pq_from_pairs(pairs(), gt_json["categories"])
