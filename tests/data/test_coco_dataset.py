"""The COCO-format dataset reader and the ground-truth interface it shares with the synthetic scenes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segbench.data import (
    CATEGORIES,
    CocoDataset,
    InstanceGroundTruth,
    PanopticGroundTruth,
    SemanticGroundTruth,
    ShapesDataset,
    annotation_mask,
    instances_ground_truth,
)
from segbench.errors import DatasetError
from tests.data import coco_files
from tests.data.coco_files import CAR, GRASS, HEIGHT, PERSON, WIDTH, write_coco_dataset


def read_written(root: Path, **kwargs: Any) -> CocoDataset:
    return CocoDataset(root / "images", root / "instances.json", root / "panoptic.json", **kwargs)


def one_line_error(call: Any, *fragments: object) -> str:
    """``call`` raises a DatasetError: one line, naming every fragment (a path, an id)."""
    with pytest.raises(DatasetError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message
    return message


# ------------------------------------------------------------------------------------------------
# The synthetic scenes written to disk and read back


def test_written_scenes_read_back_as_the_same_ground_truth(
    written_root: Path, shapes_val: ShapesDataset
) -> None:
    dataset = read_written(written_root)
    assert len(dataset) == len(shapes_val)
    assert [(c.id, c.name, c.isthing) for c in dataset.categories] == [
        (c.id, c.name, c.isthing) for c in CATEGORIES
    ]
    for scene, sample in zip(shapes_val, dataset, strict=True):
        assert (sample.name, sample.image_id) == (scene.name, scene.image_id)
        np.testing.assert_array_equal(sample.image, scene.image)
        masks = sample.instance_masks()
        assert masks.dtype == bool
        np.testing.assert_array_equal(
            masks.reshape(-1, *scene.semantic.shape), [i.mask for i in scene.instances]
        )
        assert [a["category_id"] for a in sample.instance_annotations()] == [
            i.category + 1 for i in scene.instances
        ]
        ours, theirs = sample.panoptic_truth(), scene.panoptic_truth()
        np.testing.assert_array_equal(ours.id_map, theirs.id_map)
        assert ours.segments == theirs.segments


def test_both_provide_the_ground_truth_interface(written_root: Path, shapes_val: ShapesDataset) -> None:
    for sample in (shapes_val[0], read_written(written_root)[0]):
        assert isinstance(sample, InstanceGroundTruth)
        assert isinstance(sample, PanopticGroundTruth)
    assert isinstance(shapes_val[0], SemanticGroundTruth)
    np.testing.assert_array_equal(shapes_val[0].label, shapes_val[0].semantic)


def test_instances_ground_truth_is_the_same_from_disk(written_root: Path, shapes_val: ShapesDataset) -> None:
    def comparable(data: dict[str, Any]) -> dict[str, Any]:
        # Annotation ids are numbered per set on disk and per image in memory; both get renumbered.
        return {**data, "annotations": [{**a, "id": 0} for a in data["annotations"]]}

    from_disk = instances_ground_truth(list(read_written(written_root)))
    in_memory = instances_ground_truth(list(shapes_val))
    assert comparable(from_disk) == comparable(in_memory)
    assert [c["id"] for c in in_memory["categories"]] == [c.id for c in CATEGORIES if c.isthing]


def test_duplicate_image_ids_are_rejected(shapes_val: ShapesDataset) -> None:
    with pytest.raises(ValueError, match="image id 1 appears twice"):
        instances_ground_truth([shapes_val[0], shapes_val[0]])


def test_limit_keeps_the_first_images(written_root: Path, shapes_val: ShapesDataset) -> None:
    dataset = read_written(written_root, limit=3)
    assert [s.image_id for s in dataset] == [s.image_id for s in shapes_val[:3]]
    assert len(read_written(written_root, limit=0)) == 0
    assert len(read_written(written_root, limit=100)) == len(shapes_val)
    assert [s.image_id for s in dataset[-2:]] == [2, 3]
    with pytest.raises(IndexError):
        dataset[3]
    one_line_error(lambda: read_written(written_root, limit=-1), "limit")


def test_panoptic_png_folder_defaults_to_the_json_path_without_suffix(written_root: Path) -> None:
    dataset = CocoDataset(written_root / "images", panoptic_json=written_root / "panoptic.json")
    assert dataset.panoptic_dir == written_root / "panoptic"
    sample = dataset[0]
    assert sample.panoptic_truth().id_map.shape == sample.image.shape[:2]


# ------------------------------------------------------------------------------------------------
# A hand-built COCO dataset: polygons, RLE, crowd, a grey image


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    return write_coco_dataset(tmp_path / "coco")


def read_coco(root: Path, **kwargs: Any) -> CocoDataset:
    return CocoDataset(root / "images", root / "instances_val.json", root / "panoptic_val.json", **kwargs)


def test_hand_built_dataset_reads(coco_root: Path) -> None:
    dataset = read_coco(coco_root)
    assert [s.image_id for s in dataset] == [11, 30]
    assert [s.name for s in dataset] == ["000000000011", "000000000030"]
    assert [(c.id, c.isthing) for c in dataset.categories] == [(PERSON, True), (CAR, True), (GRASS, False)]
    first, grey = dataset[0], dataset[1]
    assert first.image.shape == grey.image.shape == (HEIGHT, WIDTH, 3)
    assert grey.image.dtype == np.uint8
    # A grey image becomes RGB with three equal channels.
    np.testing.assert_array_equal(grey.image[..., 0], grey.image[..., 2])
    assert [a["id"] for a in first.instance_annotations()] == [5, 6, 7]
    assert first.instance_annotations()[2]["iscrowd"] == 1


def test_masks_decode_polygons_and_both_rles(coco_root: Path) -> None:
    first, second = read_coco(coco_root)
    person, car, crowd = first.instance_masks()
    # The polygon's interior is inside, the far pixels outside (its edge is pycocotools' rasterising).
    assert person[8:28, 6:14].all()
    assert not person[:4].any() and not person[:, 18:].any()
    np.testing.assert_array_equal(car, coco_files.disc(12, 34, 7))
    np.testing.assert_array_equal(crowd, coco_files.disc(33, 36, 4))
    (two_parts,) = second.instance_masks()
    assert two_parts[4:9, 4:9].all() and two_parts[22:27, 22:29].all() and not two_parts[15, 15]


def test_instances_only_and_panoptic_only(coco_root: Path) -> None:
    instances_only = CocoDataset(coco_root / "images", coco_root / "instances_val.json")
    assert all(c.isthing for c in instances_only.categories)
    one_line_error(lambda: instances_only[0].panoptic_truth(), "no panoptic JSON")
    panoptic_only = CocoDataset(coco_root / "images", panoptic_json=coco_root / "panoptic_val.json")
    one_line_error(lambda: panoptic_only[0].instance_annotations(), "no instances JSON")
    truth = panoptic_only[0].panoptic_truth()
    assert [s["category_id"] for s in truth.segments] == [GRASS, PERSON, CAR, PERSON]
    assert set(np.unique(truth.id_map)) == {1, 2, 3, 4}


def test_annotation_mask_rejects_malformed_segmentations() -> None:
    one_line_error(lambda: annotation_mask([[1.0, 2.0, 3.0, 4.0]], 8, 8), "4 coordinates")
    one_line_error(lambda: annotation_mask({"size": [4, 4], "counts": "x"}, 8, 8), "4x4")
    one_line_error(lambda: annotation_mask({"size": [8, 8], "counts": [3, 2]}, 8, 8), "add up")
    one_line_error(lambda: annotation_mask("polygon", 8, 8), "str")
    # Corrupt compressed counts never reach pycocotools' decoder, which writes runs unchecked.
    one_line_error(lambda: annotation_mask({"size": [8, 8], "counts": "\x7f\x7f"}, 8, 8), "corrupt")
    small = coco_files.compressed_rle(np.ones((HEIGHT, WIDTH), bool))["counts"]
    one_line_error(lambda: annotation_mask({"size": [8, 8], "counts": small}, 8, 8), "add up")


# ------------------------------------------------------------------------------------------------
# Bad input: one DatasetError line that names the file


def rewrite(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_missing_files_and_folders(coco_root: Path) -> None:
    one_line_error(
        lambda: CocoDataset(coco_root / "nope", coco_root / "instances_val.json"), coco_root / "nope"
    )
    one_line_error(
        lambda: CocoDataset(coco_root / "images", coco_root / "gone.json"), coco_root / "gone.json"
    )
    one_line_error(lambda: CocoDataset(coco_root / "images"), "instances JSON or a panoptic JSON")
    missing_pngs = coco_root / "elsewhere"
    one_line_error(
        lambda: CocoDataset(
            coco_root / "images", panoptic_json=coco_root / "panoptic_val.json", panoptic_dir=missing_pngs
        ),
        missing_pngs,
    )
    (coco_root / "images" / "000000000030.png").unlink()
    one_line_error(lambda: read_coco(coco_root), "000000000030.png")
    one_line_error(
        lambda: CocoDataset(coco_root / "images", panoptic_json=coco_root / "panoptic_val.json"),
        "000000000030.png",
    )


def test_missing_panoptic_png_is_named(coco_root: Path) -> None:
    (coco_root / "panoptic_val" / "000000000011.png").unlink()
    one_line_error(lambda: read_coco(coco_root), "000000000011.png")


def test_malformed_json(coco_root: Path) -> None:
    path = coco_root / "instances_val.json"
    path.write_text(path.read_text()[:-5])
    assert "invalid JSON" in one_line_error(lambda: read_coco(coco_root), path)
    path.write_text("[]")
    one_line_error(lambda: read_coco(coco_root), path)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            lambda d: [d["images"][1].update(id="30"), d["annotations"][3].update(image_id="30")],
            "not an integer",
        ),
        (lambda d: d["images"][0].pop("height"), "'height'"),
        (lambda d: d["annotations"][0].pop("segmentation"), "annotation 5 has no 'segmentation'"),
        (lambda d: d["annotations"][0].update(segmentation=[[0, 0, 4, 4]]), "annotation 5"),
        (lambda d: d["annotations"][1]["segmentation"].update(size=[10, 10]), "annotation 6"),
        (lambda d: d["annotations"][0].update(category_id=99), "category_id 99"),
    ],
)
def test_malformed_instances(coco_root: Path, change: Any, fragment: str) -> None:
    rewrite(coco_root / "instances_val.json", change)
    one_line_error(lambda: read_coco(coco_root), coco_root / "instances_val.json", fragment)


def test_instance_category_must_be_a_panoptic_thing(coco_root: Path) -> None:
    rewrite(coco_root / "panoptic_val.json", lambda d: d["categories"][1].update(isthing=0))
    one_line_error(lambda: read_coco(coco_root), "category 8 is not a thing")


def test_image_without_panoptic_annotation(coco_root: Path) -> None:
    rewrite(coco_root / "panoptic_val.json", lambda d: d["annotations"].pop())
    one_line_error(lambda: read_coco(coco_root), coco_root / "panoptic_val.json", "image id 30")
    assert len(read_coco(coco_root, limit=1)) == 1  # only the images kept need one


def test_image_and_png_sizes_must_match_the_json(coco_root: Path) -> None:
    rewrite(coco_root / "instances_val.json", lambda d: d["images"][1].update(height=HEIGHT + 1))
    rewrite(coco_root / "instances_val.json", lambda d: d["annotations"].pop())  # its RLE size would differ
    dataset = read_coco(coco_root)
    one_line_error(lambda: dataset[1], "000000000030.png", f"{WIDTH}x{HEIGHT + 1}")
    Image.fromarray(np.zeros((HEIGHT, WIDTH + 2, 3), np.uint8)).save(
        coco_root / "panoptic_val" / "000000000011.png"
    )
    one_line_error(lambda: dataset[0].panoptic_truth(), "000000000011.png")
