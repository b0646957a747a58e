"""Task metrics take their ground truth from the dataset: a COCO-format dataset read from disk scores
exactly as the in-memory synthetic scenes it was written from, and a hand-built COCO dataset with
categories of its own is evaluated the same way."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segbench.data import CocoDataset, ShapesDataset, write_shapes_dataset
from segbench.errors import DatasetError
from segbench.metrics.tasks import Evaluation, evaluate_task, panoptic_quality
from tests.data.coco_files import write_coco_dataset

OFFSET = 1  # shapes models predict class indices; the category id is index + 1


@pytest.fixture(scope="module")
def scenes() -> list:
    return list(ShapesDataset(6, height=64, width=80, seed=11, split="val"))


@pytest.fixture(scope="module")
def from_disk(tmp_path_factory: pytest.TempPathFactory, scenes: list) -> list:
    root = write_shapes_dataset(tmp_path_factory.mktemp("shapes"), scenes)
    return list(CocoDataset(root / "images", root / "instances.json", root / "panoptic.json"))


def instance_predictor(samples: list, drop: Collection[tuple[int, int]] = ()) -> Any:
    """Perfect detections of ``samples``' instances (found by image), less the ``(image_id, k)`` in
    ``drop``. The images are identical on disk, so one predictor serves both datasets."""
    by_image = {s.image.tobytes(): s for s in samples}

    def predict(images: np.ndarray) -> list[dict[str, np.ndarray]]:
        outputs = []
        for image in images:
            sample = by_image[image.tobytes()]
            kept = [k for k in range(len(sample.instances)) if (sample.image_id, k) not in drop]
            masks = np.array([sample.instances[k].mask for k in kept], bool).reshape(-1, *image.shape[:2])
            labels = np.array([sample.instances[k].category for k in kept], np.int64)
            outputs.append({"masks": masks, "scores": np.linspace(0.9, 0.5, len(kept)), "labels": labels})
        return outputs

    return predict


def panoptic_predictor(samples: list, drop: Collection[int] = ()) -> Any:
    """The ground truth's own segments as predictions (ids changed), less the images in ``drop``'s last
    thing segment."""
    by_image = {s.image.tobytes(): s for s in samples}

    def predict(images: np.ndarray) -> list[tuple[np.ndarray, list[dict[str, Any]]]]:
        outputs = []
        for image in images:
            sample = by_image[image.tobytes()]
            truth = sample.panoptic_truth()
            id_map = np.where(truth.id_map > 0, truth.id_map.astype(np.int64) + 1000, 0)
            segments = [
                {"id": s["id"] + 1000, "category_id": s["category_id"] - OFFSET} for s in truth.segments
            ]
            if sample.image_id in drop:
                gone = segments.pop()
                id_map[id_map == gone["id"]] = 0
            outputs.append((id_map, segments))
        return outputs

    return predict


def assert_same(ours: Evaluation, theirs: Evaluation) -> None:
    assert ours.metrics == theirs.metrics
    assert ours.names == theirs.names
    for name, values in ours.per_image().items():
        np.testing.assert_array_equal(values, theirs.per_image()[name])


@pytest.mark.parametrize("batch_size", [1, 4])
def test_instance_ap_from_disk_equals_in_memory(scenes: list, from_disk: list, batch_size: int) -> None:
    perfect = instance_predictor(scenes)
    for samples in (scenes, from_disk):
        evaluation = evaluate_task("instance", perfect, samples, batch_size, 6, 255, OFFSET)
        assert evaluation.metrics == {"bbox_ap": 1.0, "segm_ap": 1.0}

    first_with_two = next(s for s in scenes if len(s.instances) >= 2)
    dropped = instance_predictor(scenes, drop={(first_with_two.image_id, 1)})
    ours = evaluate_task("instance", dropped, from_disk, batch_size, 6, 255, OFFSET)
    theirs = evaluate_task("instance", dropped, scenes, batch_size, 6, 255, OFFSET)
    assert ours.metrics["segm_ap"] < 1.0 and ours.metrics["bbox_ap"] < 1.0
    assert_same(ours, theirs)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_panoptic_quality_from_disk_equals_in_memory(scenes: list, from_disk: list, batch_size: int) -> None:
    perfect = panoptic_predictor(scenes)
    for samples in (scenes, from_disk):
        evaluation = evaluate_task("panoptic", perfect, samples, batch_size, 6, 255, OFFSET)
        assert evaluation.metrics == {"pq": 1.0, "sq": 1.0, "rq": 1.0}

    dropped = panoptic_predictor(scenes, drop={scenes[2].image_id})
    ours = evaluate_task("panoptic", dropped, from_disk, batch_size, 6, 255, OFFSET)
    theirs = evaluate_task("panoptic", dropped, scenes, batch_size, 6, 255, OFFSET)
    assert ours.metrics["rq"] < 1.0 and ours.metrics["pq"] < 1.0
    assert_same(ours, theirs)
    summary = panoptic_quality(dropped, from_disk, batch_size, OFFSET)
    assert summary == panoptic_quality(dropped, scenes, batch_size, OFFSET)
    assert summary["all"]["pq"] == ours.metrics["pq"]


# ------------------------------------------------------------------------------------------------
# A hand-built COCO dataset: polygons, RLE, a crowd region, its own category ids (7, 8 and stuff 9)


@pytest.fixture(scope="module")
def coco_samples(tmp_path_factory: pytest.TempPathFactory) -> list:
    root = write_coco_dataset(tmp_path_factory.mktemp("coco"))
    return list(CocoDataset(root / "images", root / "instances_val.json", root / "panoptic_val.json"))


def coco_instance_predictor(samples: list, drop: Collection[int] = ()) -> Any:
    """The non-crowd annotations as detections (a detector predicts category ids: offset 0), less the
    annotation ids in ``drop``."""
    by_image = {s.image.tobytes(): s for s in samples}

    def predict(images: np.ndarray) -> list[dict[str, np.ndarray]]:
        outputs = []
        for image in images:
            sample = by_image[image.tobytes()]
            anns, masks = sample.instance_annotations(), sample.instance_masks()
            kept = [k for k, a in enumerate(anns) if not a.get("iscrowd") and a["id"] not in drop]
            outputs.append(
                {
                    "masks": masks[kept],
                    "scores": np.full(len(kept), 0.8),
                    "labels": np.array([anns[k]["category_id"] for k in kept], np.int64),
                }
            )
        return outputs

    return predict


def test_instance_ap_on_a_coco_dataset(coco_samples: list) -> None:
    perfect = evaluate_task("instance", coco_instance_predictor(coco_samples), coco_samples, 2, 0)
    assert perfect.metrics == {"bbox_ap": 1.0, "segm_ap": 1.0}
    assert perfect.names == ["000000000011", "000000000030"]
    # Dropping image 30's only car leaves image 11's car found: car AP falls, person AP stays 1.
    dropped = evaluate_task("instance", coco_instance_predictor(coco_samples, drop={9}), coco_samples, 2, 0)
    assert dropped.metrics["segm_ap"] < 1.0 and dropped.metrics["bbox_ap"] < 1.0
    per_image = dropped.per_image()["segm_ap"]
    assert per_image[0] == pytest.approx(1.0) and per_image[1] == 0.0


def test_panoptic_quality_on_a_coco_dataset(coco_samples: list) -> None:
    def predict(images: np.ndarray, drop_car: bool = False) -> list:
        by_image = {s.image.tobytes(): s for s in coco_samples}
        outputs = []
        for image in images:
            truth = by_image[image.tobytes()].panoptic_truth()
            # The crowd segment is not predicted: a crowd is never a false negative.
            segments = [s for s in truth.segments if not s["iscrowd"]]
            id_map = np.where(np.isin(truth.id_map, [s["id"] for s in segments]), truth.id_map, 0)
            if drop_car:
                id_map[np.isin(id_map, [s["id"] for s in segments if s["category_id"] == 8])] = 0
                segments = [s for s in segments if s["category_id"] != 8]
            outputs.append((id_map, segments))
        return outputs

    summary = panoptic_quality(predict, coco_samples, 1)
    assert (summary["all"]["pq"], summary["things"]["n"], summary["stuff"]["n"]) == (1.0, 2, 1)
    evaluation = evaluate_task("panoptic", predict, coco_samples, 1, 0)
    assert evaluation.metrics == {"pq": 1.0, "sq": 1.0, "rq": 1.0}
    worse = evaluate_task("panoptic", lambda images: predict(images, drop_car=True), coco_samples, 1, 0)
    assert worse.metrics["pq"] < 1.0
    assert (
        panoptic_quality(lambda images: predict(images, drop_car=True), coco_samples, 1)["per_category"][8][
            "fn"
        ]
        == 2
    )


def test_semantic_task_reads_the_label(scenes: list) -> None:
    evaluation = evaluate_task("semantic", lambda images: _labels(scenes, images), scenes, 4, 6)
    assert evaluation.metrics == {"miou": 1.0, "pixel_accuracy": 1.0, "mean_dice": 1.0}


def _labels(samples: list, images: np.ndarray) -> np.ndarray:
    by_image = {s.image.tobytes(): s.label for s in samples}
    return np.stack([by_image[image.tobytes()] for image in images])


def test_missing_ground_truth_is_one_clear_error(tmp_path: Path) -> None:
    root = write_coco_dataset(tmp_path / "coco", panoptic=False)
    samples = list(CocoDataset(root / "images", root / "instances_val.json"))
    with pytest.raises(DatasetError, match="no panoptic JSON"):
        evaluate_task("panoptic", lambda images: [(np.zeros(images.shape[1:3], np.int64), [])], samples, 1, 0)
