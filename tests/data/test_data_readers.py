"""Readers: SemanticFolder, ShapesSemantic and the COCO JSON loaders, including their errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from segbench.data import (
    IGNORE_INDEX,
    SemanticFolder,
    SemanticSample,
    ShapesDataset,
    ShapesSemantic,
    load_coco_instances,
    load_coco_panoptic,
    read_panoptic_png,
)
from segbench.errors import DatasetError, SegbenchError


def raises_naming(path: Path | str, fn: Callable[[], Any]) -> str:
    """Run ``fn``; it must raise a one-line DatasetError that names ``path``. Returns the message."""
    with pytest.raises(DatasetError) as info:
        fn()
    message = str(info.value)
    assert str(path) in message, message
    assert "\n" not in message
    assert isinstance(info.value, SegbenchError)
    return message


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if mode is not None:
        img = img.convert(mode)
    img.save(path)
    return path


@pytest.fixture
def voc_like(tmp_path: Path) -> tuple[Path, Path]:
    """Two images (JPEG and PNG) with palette masks, VOC style."""
    rng = np.random.default_rng(0)
    images, masks = tmp_path / "JPEGImages", tmp_path / "SegmentationClass"
    for stem, ext in (("2007_000001", ".jpg"), ("2007_000002", ".png")):
        save(images / f"{stem}{ext}", rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
        label = rng.integers(0, 21, (30, 40)).astype(np.uint8)
        label[:3] = 255  # VOC marks void (object borders) with 255
        mask = Image.frombytes("P", (40, 30), label.tobytes())
        # A colourful palette: the reader must return the indices, not these colours.
        mask.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
        masks.mkdir(parents=True, exist_ok=True)
        mask.save(masks / f"{stem}.png")
        np.save(tmp_path / f"{stem}.npy", label)  # the indices the reader must return
    return images, masks


def test_semantic_folder_reads_written_shapes(written_root: Path, shapes_val: ShapesDataset) -> None:
    folder = SemanticFolder(written_root / "images", written_root / "semantic")
    assert len(folder) == len(shapes_val)
    assert folder.ignore_index == IGNORE_INDEX
    for sample, expected in zip(folder, shapes_val, strict=True):
        assert isinstance(sample, SemanticSample)
        assert sample.name == expected.name
        assert sample.image.dtype == np.uint8 and sample.image.shape == expected.image.shape
        np.testing.assert_array_equal(sample.image, expected.image)
        np.testing.assert_array_equal(sample.label, expected.semantic)
    assert folder[-1].name == shapes_val[len(shapes_val) - 1].name
    assert [s.name for s in folder[:2]] == ["000000", "000001"]
    with pytest.raises(IndexError):
        folder[len(folder)]


def test_palette_mask_reads_as_indices(voc_like: tuple[Path, Path]) -> None:
    images, masks = voc_like
    folder = SemanticFolder(images, masks)
    assert [p[0].name for p in folder.pairs] == ["2007_000001.jpg", "2007_000002.png"]
    for sample in folder:
        with Image.open(masks / f"{sample.name}.png") as mask:
            assert mask.mode == "P"
        expected = np.load(images.parent / f"{sample.name}.npy")
        assert sample.label.dtype == np.uint8
        np.testing.assert_array_equal(sample.label, expected)
        assert sample.image.shape == (30, 40, 3)


def test_16bit_mask_reads_as_int64(tmp_path: Path) -> None:
    save(tmp_path / "img" / "a.png", np.zeros((8, 9, 3), np.uint8))
    label = np.arange(72, dtype=np.uint16).reshape(8, 9) * 300
    save(tmp_path / "lbl" / "a.png", label)
    sample = SemanticFolder(tmp_path / "img", tmp_path / "lbl")[0]
    assert sample.label.dtype == np.int64
    np.testing.assert_array_equal(sample.label, label.astype(np.int64))


def test_grayscale_and_rgba_images_become_rgb(tmp_path: Path) -> None:
    save(tmp_path / "img" / "g.png", np.full((5, 6), 7, np.uint8))
    save(tmp_path / "img" / "r.png", np.full((5, 6, 4), 9, np.uint8))
    for stem in ("g", "r"):
        save(tmp_path / "lbl" / f"{stem}.png", np.ones((5, 6), np.uint8))
    folder = SemanticFolder(tmp_path / "img", tmp_path / "lbl")
    assert [s.image.shape for s in folder] == [(5, 6, 3), (5, 6, 3)]
    assert folder[0].image.max() == 7 and folder[1].image.max() == 9


def test_shapes_semantic_adapter() -> None:
    ds = ShapesDataset(3, height=40, width=48, seed=2)
    adapted = ShapesSemantic(ds)
    assert len(adapted) == 3
    assert adapted.ignore_index == IGNORE_INDEX
    for sample, original in zip(adapted, ds, strict=True):
        assert sample.name == original.name
        np.testing.assert_array_equal(sample.image, original.image)
        np.testing.assert_array_equal(sample.label, original.semantic)
    assert adapted[-1].name == "000002"


# ------------------------------------------------------------------------------------------------
# SemanticFolder errors


def test_missing_images_dir(tmp_path: Path) -> None:
    (tmp_path / "masks").mkdir()
    raises_naming(tmp_path / "nope", lambda: SemanticFolder(tmp_path / "nope", tmp_path / "masks"))


def test_missing_masks_dir(voc_like: tuple[Path, Path], tmp_path: Path) -> None:
    images, _ = voc_like
    raises_naming(tmp_path / "nope", lambda: SemanticFolder(images, tmp_path / "nope"))


def test_images_dir_is_a_file(voc_like: tuple[Path, Path]) -> None:
    images, masks = voc_like
    a_file = images / "2007_000001.jpg"
    raises_naming(a_file, lambda: SemanticFolder(a_file, masks))


def test_no_images(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    (tmp_path / "lbl").mkdir()
    message = raises_naming(tmp_path / "img", lambda: SemanticFolder(tmp_path / "img", tmp_path / "lbl"))
    assert "no images" in message


def test_image_without_mask(voc_like: tuple[Path, Path]) -> None:
    images, masks = voc_like
    (masks / "2007_000002.png").unlink()
    message = raises_naming(images / "2007_000002.png", lambda: SemanticFolder(images, masks))
    assert str(masks / "2007_000002.png") in message
    assert message.startswith("no mask for image")


def test_duplicate_stems(voc_like: tuple[Path, Path]) -> None:
    images, masks = voc_like
    save(images / "2007_000001.png", np.zeros((30, 40, 3), np.uint8))
    raises_naming(images / "2007_000001.png", lambda: SemanticFolder(images, masks))


def test_size_mismatch(voc_like: tuple[Path, Path]) -> None:
    images, masks = voc_like
    save(masks / "2007_000002.png", np.zeros((30, 41), np.uint8))
    folder = SemanticFolder(images, masks)  # contents are checked lazily
    folder[0]
    message = raises_naming(masks / "2007_000002.png", lambda: folder[1])
    assert "41x30" in message and "40x30" in message


def test_corrupt_image(voc_like: tuple[Path, Path]) -> None:
    images, masks = voc_like
    (images / "2007_000001.jpg").write_bytes(b"this is not a jpeg at all")
    folder = SemanticFolder(images, masks)
    raises_naming(images / "2007_000001.jpg", lambda: folder[0])
    assert folder[1].name == "2007_000002"  # one bad file does not poison the others


def test_truncated_image(voc_like: tuple[Path, Path]) -> None:
    images, masks = voc_like
    path = images / "2007_000002.png"
    path.write_bytes(path.read_bytes()[:200])
    raises_naming(path, lambda: SemanticFolder(images, masks)[1])


def test_corrupt_mask(voc_like: tuple[Path, Path]) -> None:
    images, masks = voc_like
    (masks / "2007_000001.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    raises_naming(masks / "2007_000001.png", lambda: SemanticFolder(images, masks)[0])


def test_rgb_mask_rejected(voc_like: tuple[Path, Path]) -> None:
    images, masks = voc_like
    save(masks / "2007_000001.png", np.zeros((30, 40, 3), np.uint8))
    message = raises_naming(masks / "2007_000001.png", lambda: SemanticFolder(images, masks)[0])
    assert "'RGB'" in message


# ------------------------------------------------------------------------------------------------
# COCO loaders


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def minimal_coco() -> dict[str, Any]:
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 4, "bbox": [0, 0, 1, 1], "area": 1}],
        "categories": [{"id": 4, "name": "circle"}],
    }


def test_load_instances_missing_file(tmp_path: Path) -> None:
    raises_naming(tmp_path / "missing.json", lambda: load_coco_instances(tmp_path / "missing.json"))


def test_load_instances_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"images": [}')
    message = raises_naming(path, lambda: load_coco_instances(path))
    assert "invalid JSON" in message


def test_load_instances_not_an_object(tmp_path: Path) -> None:
    path = write_json(tmp_path / "list.json", [1, 2])
    raises_naming(path, lambda: load_coco_instances(path))


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_load_instances_missing_key(tmp_path: Path, key: str) -> None:
    data = minimal_coco()
    del data[key]
    path = write_json(tmp_path / "ann.json", data)
    message = raises_naming(path, lambda: load_coco_instances(path))
    assert repr(key) in message


def test_load_instances_unknown_image_id(tmp_path: Path) -> None:
    data = minimal_coco()
    data["annotations"][0]["image_id"] = 99
    path = write_json(tmp_path / "ann.json", data)
    message = raises_naming(path, lambda: load_coco_instances(path))
    assert "annotation id 7" in message and "99" in message


def test_load_instances_unknown_category(tmp_path: Path) -> None:
    data = minimal_coco()
    data["annotations"][0]["category_id"] = 5
    path = write_json(tmp_path / "ann.json", data)
    assert "category_id 5" in raises_naming(path, lambda: load_coco_instances(path))


def test_load_instances_checks_images_dir(tmp_path: Path) -> None:
    path = write_json(tmp_path / "ann.json", minimal_coco())
    assert load_coco_instances(path)["annotations"][0]["id"] == 7
    raises_naming(tmp_path / "imgs", lambda: load_coco_instances(path, tmp_path / "imgs"))
    (tmp_path / "imgs").mkdir()
    raises_naming(tmp_path / "imgs" / "a.png", lambda: load_coco_instances(path, tmp_path / "imgs"))
    save(tmp_path / "imgs" / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert load_coco_instances(str(path), str(tmp_path / "imgs")) == minimal_coco()


def minimal_panoptic() -> dict[str, Any]:
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "a.png",
                "segments_info": [
                    {"id": 5, "category_id": 1, "area": 16, "bbox": [0, 0, 4, 4], "iscrowd": 0}
                ],
            }
        ],
        "categories": [{"id": 1, "name": "sky", "isthing": 0}],
    }


def test_load_panoptic_default_png_dir(tmp_path: Path) -> None:
    path = write_json(tmp_path / "panoptic_val.json", minimal_panoptic())
    raises_naming(tmp_path / "panoptic_val", lambda: load_coco_panoptic(path))
    (tmp_path / "panoptic_val").mkdir()
    raises_naming(tmp_path / "panoptic_val" / "a.png", lambda: load_coco_panoptic(path))
    png = np.zeros((4, 4, 3), np.uint8)
    png[..., 0] = 5
    save(tmp_path / "panoptic_val" / "a.png", png)
    assert load_coco_panoptic(path) == minimal_panoptic()
    np.testing.assert_array_equal(read_panoptic_png(tmp_path / "panoptic_val" / "a.png"), np.full((4, 4), 5))


def test_load_panoptic_explicit_png_dir(tmp_path: Path) -> None:
    path = write_json(tmp_path / "pan.json", minimal_panoptic())
    save(tmp_path / "pngs" / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert load_coco_panoptic(path, tmp_path / "pngs")["annotations"][0]["file_name"] == "a.png"


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_load_panoptic_missing_key(tmp_path: Path, key: str) -> None:
    data = minimal_panoptic()
    del data[key]
    path = write_json(tmp_path / "pan.json", data)
    assert repr(key) in raises_naming(path, lambda: load_coco_panoptic(path))


def test_load_panoptic_errors(tmp_path: Path) -> None:
    raises_naming(tmp_path / "none.json", lambda: load_coco_panoptic(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    raises_naming(bad, lambda: load_coco_panoptic(bad))
    data = minimal_panoptic()
    data["annotations"][0]["image_id"] = 2
    path = write_json(tmp_path / "pan.json", data)
    assert "unknown image_id 2" in raises_naming(path, lambda: load_coco_panoptic(path))
    data = minimal_panoptic()
    del data["annotations"][0]["segments_info"]
    path = write_json(tmp_path / "pan.json", data)
    assert "segments_info" in raises_naming(path, lambda: load_coco_panoptic(path))


def test_read_panoptic_png_rejects_non_rgb(tmp_path: Path) -> None:
    path = save(tmp_path / "grey.png", np.zeros((4, 4), np.uint8))
    raises_naming(path, lambda: read_panoptic_png(path))
    raises_naming(tmp_path / "none.png", lambda: read_panoptic_png(tmp_path / "none.png"))
