"""Instance-segmentation metrics: COCO box and mask AP, computed by pycocotools' ``COCOeval``.

Only the plumbing lives here (results encoding, in-memory ground truth, silencing pycocotools'
prints); the matching and AP arithmetic are pycocotools' own, so the numbers are the official ones.

Conventions beyond plain COCOeval:

* The ground truth is deep-copied and never modified. In the copy, annotations are renumbered
  ``1..N`` (COCOeval treats an annotation id of 0 as "unmatched", and duplicate ids collide in
  ``createIndex``), a missing ``iscrowd`` becomes 0, a missing ``area`` becomes the mask area (or
  the box area when there is no segmentation) and a missing ``bbox`` the mask's bounding box.
* Empty ``results`` are evaluated as "no detections" (pycocotools' ``loadRes`` cannot take an empty
  list): AP is 0.0 wherever ground truth exists.
* COCOeval reports -1 when no category has ground truth; that is returned as NaN, like the semantic
  metrics' "nothing to average".
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

IOU_TYPES = ("bbox", "segm")
# COCOeval.stats indices 0..2: AP@[.50:.95], AP@.50, AP@.75 (all areas, 100 detections).
_STAT_NAMES = ("ap", "ap50", "ap75")


def masks_to_coco_results(
    image_id: int,
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    category_ids: np.ndarray,
    masks: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """COCO results entries for one image's detections.

    ``boxes_xyxy`` is ``[N, 4]`` (x1, y1, x2, y2) in pixels and becomes COCO's ``[x, y, w, h]``;
    ``masks`` (``[N, H, W]``, bool or 0/1), when given, becomes RLE ``segmentation`` with str counts.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    category_ids = np.asarray(category_ids).reshape(-1)
    n = boxes.shape[0]
    if scores.shape[0] != n or category_ids.shape[0] != n:
        raise ValueError(
            f"got {n} boxes, {scores.shape[0]} scores and {category_ids.shape[0]} category ids; "
            "they must have the same length"
        )
    rles: list[dict[str, Any]] | None = None
    if masks is not None:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[0] != n:
            raise ValueError(f"masks must have shape [{n}, H, W], got {masks.shape}")
        rles = []
        if n:
            # encode() wants a Fortran-ordered HxWxN uint8 array and returns one RLE per mask.
            encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
            # counts are bytes; results must survive json.dump.
            rles = [
                {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in encoded
            ]

    results: list[dict[str, Any]] = []
    for k in range(n):
        x1, y1, x2, y2 = (float(v) for v in boxes[k])
        entry: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(category_ids[k]),
            "score": float(scores[k]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
        }
        if rles is not None:
            entry["segmentation"] = rles[k]
        results.append(entry)
    return results


def _complete_ground_truth(coco: COCO) -> None:
    """Fill ``iscrowd``/``area``/``bbox`` where missing, in place (anns are the index's own dicts)."""
    for ann in coco.dataset["annotations"]:
        ann.setdefault("iscrowd", 0)
        has_segm = bool(ann.get("segmentation"))
        if ("area" not in ann or "bbox" not in ann) and has_segm:
            # annToRLE handles polygons, uncompressed and compressed RLE, using the image size.
            rle = coco.annToRLE(ann)
            ann.setdefault("area", float(mask_utils.area(rle)))
            ann.setdefault("bbox", [float(v) for v in mask_utils.toBbox(rle)])
        if "bbox" not in ann:
            raise ValueError(f"ground-truth annotation {ann['id']} has neither 'bbox' nor 'segmentation'")
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])


def _ground_truth_coco(ground_truth: dict[str, Any]) -> COCO:
    for key in ("images", "annotations", "categories"):
        if key not in ground_truth:
            raise ValueError(f"ground truth needs an {key!r} list (COCO instances format)")
    dataset = copy.deepcopy(ground_truth)
    for new_id, ann in enumerate(dataset["annotations"], start=1):
        ann["id"] = new_id
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    _complete_ground_truth(coco)
    return coco


def _results_coco(coco_gt: COCO, results: Sequence[dict[str, Any]]) -> COCO:
    if not results:
        # loadRes indexes results[0]; an empty detection set is a valid COCO object all the same.
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset["categories"]),
            "annotations": [],
        }
        coco_dt.createIndex()
        return coco_dt
    unknown = {r["image_id"] for r in results} - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(f"results refer to image ids not in the ground truth: {sorted(unknown)[:10]}")
    # loadRes adds id/area/iscrowd (and box polygons) to the dicts it is given: keep the caller's intact.
    return coco_gt.loadRes(copy.deepcopy(list(results)))


def evaluate_instances(
    ground_truth: dict[str, Any],
    results: Sequence[dict[str, Any]],
    iou_types: Sequence[str] = IOU_TYPES,
) -> dict[str, float]:
    """COCO AP, AP50 and AP75 per IoU type, as fractions: ``{"bbox_ap", ..., "segm_ap75"}``.

    ``ground_truth`` is a COCO instances dict (images, annotations, categories), ``results`` a list
    of COCO result entries (see :func:`masks_to_coco_results`). Only the requested ``iou_types``
    appear in the output. A metric is NaN when no category has ground truth.
    """
    return evaluate_instances_with(ground_truth, results, iou_types)[0]


def evaluate_instances_with(
    ground_truth: dict[str, Any],
    results: Sequence[dict[str, Any]],
    iou_types: Sequence[str] = IOU_TYPES,
) -> tuple[dict[str, float], dict[str, COCOeval]]:
    """:func:`evaluate_instances`' metrics and the evaluated ``COCOeval`` per IoU type (for the
    per-image matches the numerics checker resamples)."""
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"unknown iou type {iou_type!r}; expected one of {IOU_TYPES}")
    if "segm" in iou_types:
        # Without masks loadRes would silently score each box as a polygon mask.
        if any("segmentation" not in r for r in results):
            raise ValueError("segm evaluation needs 'segmentation' in every result; use iou_types=('bbox',)")
        if any(not ann.get("segmentation") for ann in ground_truth.get("annotations", [])):
            raise ValueError("segm evaluation needs 'segmentation' in every ground-truth annotation")

    metrics: dict[str, float] = {}
    evaluators: dict[str, COCOeval] = {}
    # pycocotools prints progress and the 12-line summary for every call.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _ground_truth_coco(ground_truth)
        coco_dt = _results_coco(coco_gt, results)
        for iou_type in iou_types:
            evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            evaluators[iou_type] = evaluator
            for index, name in enumerate(_STAT_NAMES):
                value = float(evaluator.stats[index])
                metrics[f"{iou_type}_{name}"] = math.nan if value < 0 else value
    return metrics, evaluators
