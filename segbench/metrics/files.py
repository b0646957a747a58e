"""Evaluate prediction files in the standard formats against ground-truth files (``segbench eval``).

The metric code is the one segbench uses everywhere else; this module only reads, pairs and checks
the files:

* semantic: two folders of label PNGs with the same file names (grayscale, palette read as the
  indices, or 16/32-bit integer), scored by :func:`~segbench.metrics.semantic.confusion_matrix`
  and :func:`~segbench.metrics.semantic.semantic_metrics`;
* instance: a COCO instances JSON and a COCO results JSON (a list of ``image_id``, ``category_id``,
  ``score`` and ``bbox`` and/or RLE ``segmentation``), scored by
  :func:`~segbench.metrics.instance.evaluate_instances` (pycocotools' COCOeval);
* panoptic: two COCO panoptic JSONs with their PNG folders, scored by
  :func:`~segbench.metrics.panoptic.pq_from_coco`.

Every problem with the files raises :class:`~segbench.errors.DatasetError`, and a bad option
:class:`~segbench.errors.ConfigError`, with a one-line message naming the offending path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

# Private readers helpers, reused so that the messages and checks match the dataset readers'.
from segbench.data.readers import (
    _LABEL_MODES,
    _check_category_ids,
    _check_files,
    _open_image,
    _require_dir,
    load_coco_instances,
    load_coco_panoptic,
    load_json,
)
from segbench.errors import ConfigError, DatasetError, first_line
from segbench.metrics.instance import evaluate_instances
from segbench.metrics.panoptic import pq_from_coco
from segbench.metrics.semantic import confusion_matrix, semantic_metrics

TASKS = ("semantic", "instance", "panoptic")
DEFAULT_IGNORE_INDEX = 255
_SHOWN = 5  # how many offending names or ids an error message lists
# Inferring the class count from a mislabelled file (an id map, 16-bit values) must not allocate a
# gigantic confusion matrix; ADE20K-full, the largest common label set, has 3,688 classes.
_MAX_INFERRED_CLASSES = 4096


def evaluate_files(
    task: str,
    gt: Path,
    pred: Path,
    *,
    gt_dir: Path | None = None,
    pred_dir: Path | None = None,
    num_classes: int | None = None,
    ignore_index: int = DEFAULT_IGNORE_INDEX,
) -> dict[str, Any]:
    """Metrics of the predictions in ``pred`` against the ground truth in ``gt``, JSON-serialisable.

    Metrics are fractions in [0, 1], as everywhere in segbench (not percentages). A metric that is
    undefined (nothing to average, e.g. a category absent from both sides) is ``None`` (JSON null),
    and dictionary keys are strings, so ``json.dumps(result, allow_nan=False)`` always works.

    ``task="semantic"``: ``gt`` and ``pred`` are folders of label PNGs with the same file names.
    ``num_classes`` defaults to the largest label in either folder (``ignore_index`` excluded) plus
    one; ground-truth pixels equal to ``ignore_index`` are left out. Returns ``{"task",
    "num_images", "num_classes", "ignore_index", "miou", "pixel_accuracy", "mean_dice"}``.

    ``task="instance"``: ``gt`` is a COCO instances JSON, ``pred`` a COCO results JSON list.
    Box AP is reported when every result has a ``bbox``, mask AP when every result has an RLE
    ``segmentation`` and every ground-truth annotation a ``segmentation``. Returns ``{"task",
    "num_images", "num_results", "iou_types", "bbox_ap", "bbox_ap50", "bbox_ap75", "segm_ap",
    "segm_ap50", "segm_ap75"}`` with only the evaluated IoU types' keys.

    ``task="panoptic"``: ``gt`` and ``pred`` are COCO panoptic JSONs (the predictions need only
    ``annotations``); their PNG folders are ``gt_dir``/``pred_dir``, by default the JSON path
    without ``.json`` (COCO layout). Categories come from the ground truth; a ground-truth image
    without a prediction counts all its segments as false negatives. Returns ``{"task",
    "num_images", "images_without_prediction", "all", "things", "stuff", "per_category"}`` where the
    groups are ``{"pq", "sq", "rq", "n"}`` and ``per_category`` maps the category id (a string) to
    ``{"name", "isthing", "pq", "sq", "rq", "tp", "fp", "fn"}``.

    Raises :class:`ConfigError` for an unknown task or an option that does not apply to it, and
    :class:`DatasetError` for missing, malformed or mismatched files.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    _check_options(task, gt_dir, pred_dir, num_classes, ignore_index)
    gt, pred = Path(gt), Path(pred)
    if task == "semantic":
        result = _evaluate_semantic(gt, pred, num_classes, ignore_index)
    elif task == "instance":
        result = _evaluate_instance(gt, pred)
    else:
        result = _evaluate_panoptic(gt, pred, gt_dir, pred_dir)
    return _jsonable(result)


def _check_options(
    task: str, gt_dir: Path | None, pred_dir: Path | None, num_classes: int | None, ignore_index: int
) -> None:
    if task != "panoptic" and (gt_dir is not None or pred_dir is not None):
        raise ConfigError(f"gt_dir and pred_dir apply only to the panoptic task, not to {task}")
    if task != "semantic" and (num_classes is not None or ignore_index != DEFAULT_IGNORE_INDEX):
        raise ConfigError(f"num_classes and ignore_index apply only to the semantic task, not to {task}")
    if num_classes is not None and num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes}")


def _jsonable(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, dict keys -> str (JSON has no NaN nor int keys)."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _listing(items: list[Any]) -> str:
    shown = ", ".join(str(item) for item in items[:_SHOWN])
    return shown + (f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


# --------------------------------------------------------------------------------------------------
# Semantic


def _label_files(directory: Path, what: str) -> dict[str, Path]:
    _require_dir(directory, what)
    return {p.name: p for p in directory.iterdir() if p.suffix.lower() == ".png" and p.is_file()}


def _read_label(path: Path, what: str) -> np.ndarray:
    """Class indices of a label PNG, read as :class:`~segbench.data.SemanticFolder` reads masks."""
    img = _open_image(path, what)
    if img.mode not in _LABEL_MODES:
        raise DatasetError(
            f"{what} {path} has mode {img.mode!r}; expected a single-channel or palette label PNG"
        )
    label = np.asarray(img)
    return label.astype(np.uint8) if label.dtype == bool else label


def _largest_label(label: np.ndarray, ignore_index: int) -> int:
    """The largest value other than ``ignore_index``, or -1 when there is none."""
    values = label[label != ignore_index]
    return int(values.max()) if values.size else -1


def _evaluate_semantic(gt: Path, pred: Path, num_classes: int | None, ignore_index: int) -> dict[str, Any]:
    gt_files = _label_files(gt, "ground-truth label directory")
    pred_files = _label_files(pred, "prediction label directory")
    if not gt_files:
        raise DatasetError(f"no PNG label files in ground-truth directory {gt}")
    extra = sorted(set(pred_files) - set(gt_files))
    if extra:
        raise DatasetError(
            f"{pred}: {len(extra)} prediction(s) with no ground truth in {gt}: {_listing(extra)}"
        )
    missing = sorted(set(gt_files) - set(pred_files))
    if missing:
        raise DatasetError(
            f"{pred}: no prediction for {len(missing)} ground-truth file(s) in {gt}: {_listing(missing)}"
        )

    size = num_classes or 0
    cm = np.zeros((size, size), np.int64)
    for name in sorted(gt_files):
        gt_path, pred_path = gt_files[name], pred_files[name]
        target = _read_label(gt_path, "ground-truth label PNG")
        prediction = _read_label(pred_path, "predicted label PNG")
        if target.shape != prediction.shape:
            raise DatasetError(
                f"predicted label PNG {pred_path} is {prediction.shape[1]}x{prediction.shape[0]} but "
                f"ground truth {gt_path} is {target.shape[1]}x{target.shape[0]}"
            )
        if num_classes is None:
            # Grow the matrix as larger labels turn up: counts of the smaller classes do not change.
            needed = max(_largest_label(target, ignore_index), _largest_label(prediction, ignore_index)) + 1
            if needed > _MAX_INFERRED_CLASSES:
                raise DatasetError(
                    f"label PNGs {gt_path} / {pred_path} hold class {needed - 1}: too large to infer "
                    f"num_classes (at most {_MAX_INFERRED_CLASSES}); give num_classes explicitly"
                )
            if needed > size:
                grown = np.zeros((needed, needed), np.int64)
                grown[:size, :size] = cm
                cm, size = grown, needed
        else:
            # confusion_matrix would silently drop such pixels: with the wrong class count, say so.
            labelled = target[target != ignore_index]
            if labelled.size and (labelled.min() < 0 or labelled.max() >= num_classes):
                bad = int(labelled.max() if labelled.max() >= num_classes else labelled.min())
                raise DatasetError(
                    f"ground-truth label PNG {gt_path} holds class {bad}, outside [0, {num_classes}) "
                    f"and not ignore_index {ignore_index}"
                )
        try:
            cm += confusion_matrix(prediction, target, size, ignore_index)
        except ValueError as exc:
            if num_classes is not None:
                context = f"num_classes {size}"
            else:
                # Inferred from the labels, so the culprit is ignore_index on a labelled pixel.
                context = f"num_classes {size} inferred; ignore_index {ignore_index} is no prediction"
            raise DatasetError(f"predicted label PNG {pred_path}: {first_line(exc)} ({context})") from None

    return {
        "task": "semantic",
        "num_images": len(gt_files),
        "num_classes": size,
        "ignore_index": ignore_index,
        **semantic_metrics(cm),
    }


# --------------------------------------------------------------------------------------------------
# Instance


def _is_id(value: Any) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_result(path: Path, position: int, result: Any, images: dict[Any, dict[str, Any]]) -> None:
    where = f"{path}: results[{position}]"
    if not isinstance(result, dict):
        raise DatasetError(f"{where} is a {type(result).__name__}, not an object")
    for key in ("image_id", "category_id", "score"):
        if key not in result:
            raise DatasetError(f"{where} has no {key!r}")
    for key in ("image_id", "category_id"):
        if not _is_id(result[key]):
            raise DatasetError(f"{where}: {key!r} must be an integer or a string, got {result[key]!r:.40}")
    if not _is_number(result["score"]):
        raise DatasetError(f"{where}: 'score' must be a finite number, got {result['score']!r:.40}")
    if "bbox" not in result and "segmentation" not in result:
        raise DatasetError(f"{where} has neither 'bbox' nor 'segmentation'")
    if "bbox" in result:
        box = result["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise DatasetError(f"{where}: 'bbox' must be [x, y, width, height], got {box!r:.60}")
    if "segmentation" in result:
        rle = result["segmentation"]
        if not (isinstance(rle, dict) and isinstance(rle.get("counts"), str) and "size" in rle):
            raise DatasetError(
                f"{where}: 'segmentation' must be a compressed RLE {{'size': [h, w], 'counts': str}}"
            )
        image = images.get(result["image_id"], {})
        expected = [image.get("height"), image.get("width")]
        if None not in expected and list(rle["size"]) != expected:
            raise DatasetError(
                f"{where}: segmentation size {rle['size']} differs from image {result['image_id']}'s "
                f"[height, width] {expected}"
            )


def _instance_iou_types(path: Path, results: list[dict[str, Any]], ground_truth: dict[str, Any]) -> list[str]:
    present = {key: sum(key in r for r in results) for key in ("bbox", "segmentation")}
    for key, count in present.items():
        if 0 < count < len(results):
            raise DatasetError(
                f"{path}: {count} of {len(results)} results have {key!r}; give it in all of them or none"
            )
    iou_types = []
    if present["bbox"] == len(results):
        iou_types.append("bbox")
    if present["segmentation"] == len(results):
        if all(ann.get("segmentation") for ann in ground_truth["annotations"]):
            iou_types.append("segm")
        elif not iou_types:
            raise DatasetError(
                f"{path}: the results have only masks, but not every ground-truth annotation has a "
                "'segmentation' to score them against"
            )
    return iou_types


def _evaluate_instance(gt: Path, pred: Path) -> dict[str, Any]:
    ground_truth = load_coco_instances(gt)
    results = load_json(pred, "COCO results file", expected=list)
    images = {image["id"]: image for image in ground_truth["images"]}
    categories = {category["id"] for category in ground_truth["categories"]}
    for position, result in enumerate(results):
        _check_result(pred, position, result, images)
    unknown_images = sorted({r["image_id"] for r in results} - set(images), key=str)
    if unknown_images:
        raise DatasetError(
            f"{pred}: results for {len(unknown_images)} image id(s) not in the ground truth {gt}: "
            f"{_listing(unknown_images)}"
        )
    unknown_categories = sorted({r["category_id"] for r in results} - categories, key=str)
    if unknown_categories:
        raise DatasetError(
            f"{pred}: results with category id(s) not in the ground truth {gt}: "
            f"{_listing(unknown_categories)}"
        )
    iou_types = _instance_iou_types(pred, results, ground_truth)
    try:
        metrics = evaluate_instances(ground_truth, results, iou_types)
    except ValueError as exc:
        raise DatasetError(f"cannot evaluate {pred} against {gt}: {first_line(exc)}") from None
    return {
        "task": "instance",
        "num_images": len(images),
        "num_results": len(results),
        "iou_types": iou_types,
        **metrics,
    }


# --------------------------------------------------------------------------------------------------
# Panoptic


def _check_panoptic_predictions(
    path: Path, predictions: dict[str, Any], ground_truth: dict[str, Any], png_dir: Path
) -> None:
    annotations = predictions.get("annotations")
    if not isinstance(annotations, list):
        raise DatasetError(f"{path}: needs an 'annotations' list (COCO panoptic format)")
    for position, ann in enumerate(annotations):
        if not (
            isinstance(ann, dict)
            and _is_id(ann.get("image_id"))
            and isinstance(ann.get("file_name"), str)
            and isinstance(ann.get("segments_info"), list)
        ):
            raise DatasetError(
                f"{path}: annotations[{position}] needs 'image_id', 'file_name' and a 'segments_info' list"
            )
        for segment in ann["segments_info"]:
            if not (
                isinstance(segment, dict)
                and isinstance(segment.get("id"), int)
                and _is_id(segment.get("category_id"))
            ):
                raise DatasetError(
                    f"{path}: annotations[{position}]: each segment needs an integer 'id' and a 'category_id'"
                )
        # Categories are the ground truth's: a prediction's own list (if any) is not used.
        _check_category_ids(path, ground_truth, ann["segments_info"])
    gt_images = {ann["image_id"] for ann in ground_truth["annotations"]}
    unknown = sorted({ann["image_id"] for ann in annotations} - gt_images, key=str)
    if unknown:
        raise DatasetError(
            f"{path}: predictions for {len(unknown)} image id(s) with no ground-truth annotation: "
            f"{_listing(unknown)}"
        )
    _require_dir(png_dir, "panoptic PNG directory")
    _check_files(png_dir, (ann["file_name"] for ann in annotations), path, "panoptic PNG")


def _evaluate_panoptic(gt: Path, pred: Path, gt_dir: Path | None, pred_dir: Path | None) -> dict[str, Any]:
    # Same default as load_coco_panoptic: the JSON path without ".json".
    gt_png_dir = Path(gt_dir) if gt_dir is not None else gt.with_suffix("")
    pred_png_dir = Path(pred_dir) if pred_dir is not None else pred.with_suffix("")
    ground_truth = load_coco_panoptic(gt, gt_png_dir)
    predictions = load_json(pred, "COCO panoptic predictions file")
    _check_panoptic_predictions(pred, predictions, ground_truth, pred_png_dir)
    try:
        metrics = pq_from_coco(ground_truth, gt_png_dir, predictions, pred_png_dir)
    except ValueError as exc:
        raise DatasetError(f"cannot evaluate {pred} against {gt}: {first_line(exc)}") from None
    gt_images = {ann["image_id"] for ann in ground_truth["annotations"]}
    predicted = {ann["image_id"] for ann in predictions["annotations"]}
    return {
        "task": "panoptic",
        "num_images": len(gt_images),
        "images_without_prediction": len(gt_images - predicted),
        **metrics,
    }
