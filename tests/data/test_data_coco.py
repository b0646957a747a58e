"""COCO instances/panoptic encodings and the on-disk layout of write_shapes_dataset."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from segbench.data import (
    IGNORE_INDEX,
    ShapesDataset,
    coco_instances,
    coco_panoptic,
    id_to_rgb,
    load_coco_instances,
    load_coco_panoptic,
    panoptic_png_and_segments,
    read_panoptic_png,
    rgb_to_id,
    write_shapes_dataset,
)


def test_layout(written_root: Path, shapes_val: ShapesDataset) -> None:
    names = sorted(f"{s.name}.png" for s in shapes_val)
    assert sorted(p.name for p in written_root.iterdir()) == [
        "images",
        "instances.json",
        "panoptic",
        "panoptic.json",
        "semantic",
    ]  # in particular, no temp files left behind by the atomic JSON writes
    for sub in ("images", "semantic", "panoptic"):
        assert sorted(p.name for p in (written_root / sub).iterdir()) == names


def test_images_and_semantic_pngs_round_trip(written_root: Path, shapes_val: ShapesDataset) -> None:
    for sample in shapes_val:
        with Image.open(written_root / "images" / f"{sample.name}.png") as img:
            assert img.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(img), sample.image)
        with Image.open(written_root / "semantic" / f"{sample.name}.png") as sem:
            assert sem.mode == "L"
            np.testing.assert_array_equal(np.asarray(sem), sample.semantic)


# pycocotools' decode trips a NumPy 2 deprecation inside pycocotools itself; not ours to fix.
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
def test_instances_json_decodes_with_pycocotools(written_root: Path, shapes_val: ShapesDataset) -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
        coco = COCO(str(written_root / "instances.json"))
    assert sorted(coco.getCatIds()) == [4, 5, 6]
    assert [coco.cats[i]["name"] for i in (4, 5, 6)] == ["circle", "rectangle", "triangle"]
    assert sorted(coco.getImgIds()) == [s.index + 1 for s in shapes_val]
    total = 0
    for sample in shapes_val:
        image = coco.imgs[sample.index + 1]
        assert image["file_name"] == f"{sample.name}.png"
        assert (image["height"], image["width"]) == sample.semantic.shape
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[sample.index + 1]))
        assert len(anns) == len(sample.instances)
        for ann, inst in zip(anns, sample.instances, strict=True):
            total += 1
            assert ann["category_id"] == inst.category + 1
            assert ann["iscrowd"] == 0
            decoded = coco.annToMask(ann)
            np.testing.assert_array_equal(decoded.astype(bool), inst.mask)
            rle = coco.annToRLE(ann)
            assert ann["area"] == int(mask_utils.area(rle)) == inst.area
            np.testing.assert_allclose(ann["bbox"], mask_utils.toBbox(rle))
            assert ann["bbox"] == list(inst.bbox)
    assert total > 0
    assert sorted(coco.anns) == list(range(1, total + 1))  # annotation ids are 1..N


def test_panoptic_pngs_match_segments_info(written_root: Path, shapes_val: ShapesDataset) -> None:
    data = json.loads((written_root / "panoptic.json").read_text())
    categories = {c["id"]: c for c in data["categories"]}
    assert sorted(categories) == [1, 2, 3, 4, 5, 6]
    assert [categories[i]["isthing"] for i in range(1, 7)] == [0, 0, 0, 1, 1, 1]
    assert all(len(c["color"]) == 3 for c in categories.values())
    assert len(data["annotations"]) == len(shapes_val)
    for ann, sample in zip(data["annotations"], shapes_val, strict=True):
        assert ann["image_id"] == sample.index + 1
        assert ann["file_name"] == f"{sample.name}.png"
        with Image.open(written_root / "panoptic" / ann["file_name"]) as png:
            ids = rgb_to_id(np.asarray(png))
        segments = ann["segments_info"]
        segment_ids = [seg["id"] for seg in segments]
        assert len(set(segment_ids)) == len(segment_ids)
        assert 0 not in segment_ids
        present, counts = np.unique(ids, return_counts=True)
        areas = dict(zip(present.tolist(), counts.tolist(), strict=True))
        assert set(areas) - {0} == set(segment_ids)
        # Void is exactly the ignored (dropped-fragment) pixels.
        np.testing.assert_array_equal(ids == 0, sample.semantic == IGNORE_INDEX)
        stuff_present = {int(c) for c in np.unique(sample.semantic) if c < 3}
        things = [seg for seg in segments if categories[seg["category_id"]]["isthing"]]
        assert {seg["category_id"] - 1 for seg in segments if seg not in things} == stuff_present
        assert len(things) == len(sample.instances)
        for seg in segments:
            mask = ids == seg["id"]
            assert seg["area"] == areas[seg["id"]]
            assert seg["iscrowd"] == 0
            assert np.all(sample.semantic[mask] == seg["category_id"] - 1)
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            np.testing.assert_allclose(seg["bbox"], mask_utils.toBbox(rle))
        for seg, inst in zip(things, sample.instances, strict=True):
            np.testing.assert_array_equal(ids == seg["id"], inst.mask)


def test_in_memory_dicts_equal_written_json(written_root: Path, shapes_val: ShapesDataset) -> None:
    assert coco_instances(shapes_val) == json.loads((written_root / "instances.json").read_text())
    assert coco_panoptic(shapes_val) == json.loads((written_root / "panoptic.json").read_text())


def test_file_names_callable() -> None:
    samples = ShapesDataset(2, height=32, width=32)
    inst = coco_instances(samples, file_names=lambda s: f"val/{s.name}.jpg")
    pan = coco_panoptic(samples, file_names=lambda s: f"val/{s.name}.jpg")
    assert [im["file_name"] for im in inst["images"]] == ["val/000000.jpg", "val/000001.jpg"]
    assert [im["file_name"] for im in pan["images"]] == ["val/000000.jpg", "val/000001.jpg"]
    # The panoptic PNG names stay tied to the sample, not to the image file name.
    assert [a["file_name"] for a in pan["annotations"]] == ["000000.png", "000001.png"]


def test_rle_counts_are_json_strings(shapes_val: ShapesDataset) -> None:
    data = coco_instances(shapes_val)
    assert data["annotations"]
    for ann in data["annotations"]:
        assert isinstance(ann["segmentation"]["counts"], str)
        assert isinstance(ann["area"], int)
        assert len(ann["bbox"]) == 4 and all(isinstance(v, float) for v in ann["bbox"])
    json.dumps(data)  # must be serialisable as is


def test_segment_ids_unique_with_many_instances() -> None:
    for sample in ShapesDataset(4, height=96, width=96, seed=9, max_instances=40):
        png, segments = panoptic_png_and_segments(sample)
        ids = [seg["id"] for seg in segments]
        assert len(ids) == len(set(ids)) and 0 not in ids
        stuff = len([c for c in np.unique(sample.semantic) if c < 3])
        assert len(segments) == stuff + len(sample.instances)
        assert set(np.unique(rgb_to_id(png)).tolist()) - {0} == set(ids)


def test_id_rgb_round_trip() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1 << 24, size=(7, 5), dtype=np.int64)
    ids[0, 0], ids[0, 1] = 0, (1 << 24) - 1
    rgb = id_to_rgb(ids)
    assert rgb.shape == (7, 5, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb_to_id(rgb), ids)
    assert int(rgb_to_id(np.array([1, 2, 3], np.uint8))) == 1 + 2 * 256 + 3 * 65536
    assert int(rgb_to_id(np.array([255, 255, 255], np.uint8))) == (1 << 24) - 1  # no uint8 overflow
    np.testing.assert_array_equal(id_to_rgb(np.array(1 + 2 * 256 + 3 * 65536)), [1, 2, 3])
    with pytest.raises(ValueError):
        id_to_rgb(np.array([1 << 24]))
    with pytest.raises(ValueError):
        rgb_to_id(np.zeros((2, 2), np.uint8))


def test_read_panoptic_png(written_root: Path, shapes_val: ShapesDataset) -> None:
    sample = shapes_val[0]
    ids = read_panoptic_png(written_root / "panoptic" / f"{sample.name}.png")
    png, _ = panoptic_png_and_segments(sample)
    np.testing.assert_array_equal(ids, rgb_to_id(png))


def test_written_files_pass_the_loaders(written_root: Path) -> None:
    inst = load_coco_instances(written_root / "instances.json", written_root / "images")
    pan = load_coco_panoptic(written_root / "panoptic.json")
    assert len(inst["images"]) == len(pan["annotations"]) == 8


def test_empty_dataset(tmp_path: Path) -> None:
    root = write_shapes_dataset(tmp_path / "empty", ShapesDataset(0))
    assert root == tmp_path / "empty"
    inst = load_coco_instances(root / "instances.json")
    pan = load_coco_panoptic(root / "panoptic.json")
    assert inst["images"] == inst["annotations"] == pan["annotations"] == []
    assert len(pan["categories"]) == 6


def test_rewrite_overwrites(tmp_path: Path) -> None:
    write_shapes_dataset(tmp_path, ShapesDataset(3, height=32, width=32))
    write_shapes_dataset(str(tmp_path), ShapesDataset(2, height=32, width=32, seed=1))
    data = json.loads((tmp_path / "instances.json").read_text())
    assert len(data["images"]) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
