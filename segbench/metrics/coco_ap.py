"""COCO AP of any weighting of the images, from pycocotools' own per-image matching.

The numerics checker's interval resamples images and recomputes the dataset-level AP thousands of
times. pycocotools does the per-image work (``COCOeval.evaluate``: matching detections to ground truth
at each IoU threshold, crowd and area rules) once; its ``accumulate`` cannot take image weights and,
rerun per resample, would take minutes. So the matching stays pycocotools' and only ``accumulate``'s
arithmetic for the headline AP (IoU .50:.95, all areas, 100 detections) is written here, vectorised over
resamples. With every weight 1 it reproduces ``COCOeval.stats[0]`` (a test checks it), including its
stable score order: ties keep image order, then the order within the image.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from pycocotools.cocoeval import COCOeval

_RESAMPLE_CHUNK = 128  # resamples per vectorised block: bounds memory at [chunk, IoU thresholds, dets]


@dataclass
class _Category:
    """One category's detections over all images, in image order then score order."""

    scores: np.ndarray  # [D]
    image: np.ndarray  # [D] index of each detection's image in the stats' image list
    tp: np.ndarray  # [T, D] matched and not ignored
    fp: np.ndarray  # [T, D] unmatched and not ignored


class CocoApStats:
    """Per-image, per-category COCOeval matches of one IoU type; ``metrics`` gives the AP of weighted
    image sets."""

    def __init__(
        self,
        categories: list[_Category],
        gt_counts: np.ndarray,
        names: list[str],
        recall_thresholds: np.ndarray,
    ) -> None:
        self.categories = categories
        self.gt_counts = np.asarray(gt_counts, np.float64)  # [N, K] non-ignored ground truth
        self.names = list(names)
        self.recall_thresholds = recall_thresholds

    @classmethod
    def from_evaluator(cls, evaluator: COCOeval, image_ids: list[int], names: list[str]) -> CocoApStats:
        """Read the matches of an evaluated ``COCOeval`` (``evaluate()`` done); ``image_ids`` give the
        order of the images (with their ``names``) in these stats."""
        params = evaluator.params
        area = params.areaRngLbl.index("all")
        max_det = params.maxDets[-1]
        n_images, n_areas = len(params.imgIds), len(params.areaRng)
        position = {image_id: index for index, image_id in enumerate(image_ids)}
        n_thresholds = len(params.iouThrs)
        categories = []
        gt_counts = np.zeros((len(image_ids), len(params.catIds)))
        for k in range(len(params.catIds)):
            scores, images, tps, fps = [], [], [], []
            for i, image_id in enumerate(params.imgIds):
                found = evaluator.evalImgs[k * n_areas * n_images + area * n_images + i]
                if found is None:
                    continue
                where = position[image_id]
                matched = np.asarray(found["dtMatches"])[:, :max_det].astype(bool)
                ignored = np.asarray(found["dtIgnore"])[:, :max_det].astype(bool)
                scores.append(np.asarray(found["dtScores"][:max_det], np.float64))
                images.append(np.full(matched.shape[1], where))
                tps.append(matched & ~ignored)
                fps.append(~matched & ~ignored)
                gt_counts[where, k] = np.count_nonzero(np.asarray(found["gtIgnore"]) == 0)
            categories.append(
                _Category(
                    np.concatenate(scores) if scores else np.zeros(0),
                    np.concatenate(images).astype(np.int64) if images else np.zeros(0, np.int64),
                    np.concatenate(tps, axis=1) if tps else np.zeros((n_thresholds, 0), bool),
                    np.concatenate(fps, axis=1) if fps else np.zeros((n_thresholds, 0), bool),
                )
            )
        return cls(categories, gt_counts, names, np.asarray(params.recThrs, np.float64))

    def __len__(self) -> int:
        return len(self.names)

    def concat(self, other: CocoApStats) -> CocoApStats:
        """These images followed by ``other``'s (the same categories, in the same order)."""
        offset = len(self)
        categories = [
            _Category(
                np.concatenate([a.scores, b.scores]),
                np.concatenate([a.image, b.image + offset]),
                np.concatenate([a.tp, b.tp], axis=1),
                np.concatenate([a.fp, b.fp], axis=1),
            )
            for a, b in zip(self.categories, other.categories, strict=True)
        ]
        return CocoApStats(
            categories, np.concatenate([self.gt_counts, other.gt_counts]), self.names + other.names,
            self.recall_thresholds,
        )  # fmt: skip

    def metrics(self, weights: np.ndarray) -> np.ndarray:
        """AP (fraction; NaN where no category has ground truth) per row of ``weights`` (``[R, N]``)."""
        weights = np.asarray(weights, np.float64)
        return np.concatenate(
            [
                self._ap(weights[start : start + _RESAMPLE_CHUNK])
                for start in range(0, len(weights), _RESAMPLE_CHUNK)
            ]
        )

    def _ap(self, weights: np.ndarray) -> np.ndarray:
        per_category = []
        gt = weights @ self.gt_counts  # [R, K]
        for k, category in enumerate(self.categories):
            precision = self._mean_precision(category, weights, gt[:, k])
            per_category.append(np.where(gt[:, k] > 0, precision, np.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no category with ground truth: NaN
            return np.nanmean(np.stack(per_category, axis=1), axis=1)

    def _mean_precision(self, category: _Category, weights: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """COCOeval.accumulate's interpolated precision averaged over recall and IoU thresholds."""
        rows = len(weights)
        n_thresholds = category.tp.shape[0]
        if category.scores.size == 0:
            return np.zeros(rows)
        order = np.argsort(-category.scores, kind="mergesort")
        weight = weights[:, category.image[order]][:, None, :]  # [R, 1, D]
        tp = np.cumsum(weight * category.tp[:, order], axis=2)  # [R, T, D]
        fp = np.cumsum(weight * category.fp[:, order], axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = tp / gt[:, None, None]
        precision = tp / (fp + tp + np.spacing(1))
        # The precision envelope: each point takes the best precision at any higher recall.
        precision = np.flip(np.maximum.accumulate(np.flip(precision, axis=2), axis=2), axis=2)
        # COCOeval's searchsorted(recall, thresholds, "left") for every (resample, IoU) row at once, kept
        # exact: with b = how many thresholds are <= each recall value (one exact search), recall <
        # threshold j exactly when b <= j, so the first recall >= threshold j sits at count(b <= j). The b
        # are small integers, so the rows can be offset and searched in one flat call without rounding.
        n_det, n_rows, n_grid = recall.shape[2], rows * n_thresholds, len(self.recall_thresholds)
        below = np.searchsorted(self.recall_thresholds, recall.reshape(n_rows, n_det), side="right")
        offsets = (n_grid + 1) * np.arange(n_rows)[:, None]
        found = np.searchsorted(
            (below + offsets).ravel(), (np.arange(n_grid) + offsets).ravel(), side="right"
        )
        found = (found.reshape(n_rows, n_grid) - n_det * np.arange(n_rows)[:, None]).reshape(
            rows, n_thresholds, -1
        )
        inside = found < n_det  # past the last detection the precision is 0 (never reached)
        picked = np.take_along_axis(precision, np.minimum(found, n_det - 1), axis=2)
        return np.where(inside, picked, 0.0).mean(axis=(1, 2))
