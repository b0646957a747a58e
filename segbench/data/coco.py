"""COCO instances / panoptic encodings of the shapes dataset, and writing it to disk."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from segbench.data.shapes_classes import CATEGORIES, IGNORE_INDEX, STUFF_CLASSES, Instance
from segbench.files import atomic_write_text


class ShapesScene(Protocol):
    """What the encoders read of a shapes sample (:class:`~segbench.data.shapes.ShapesSample`, which calls
    them for its own ground truth: a protocol here keeps the import one-way)."""

    index: int
    image: np.ndarray
    semantic: np.ndarray
    instances: list[Instance]

    @property
    def name(self) -> str: ...


FileNames = Callable[[ShapesScene], str]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic colour -> segment id (``R + 256*G + 256**2*B``) over the last axis."""
    rgb = np.asarray(rgb)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"expected an array whose last axis has size 3, got shape {rgb.shape}")
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment id -> COCO panoptic colour, as uint8 with a new trailing axis of size 3."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= 1 << 24):
        raise ValueError("panoptic segment ids must lie in [0, 2**24)")
    ids = ids.astype(np.uint32)
    return np.stack([ids & 0xFF, (ids >> 8) & 0xFF, (ids >> 16) & 0xFF], axis=-1).astype(np.uint8)


def _mask_bbox(mask: np.ndarray) -> list[float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


def _encode_rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    # pycocotools returns bytes; JSON needs str.
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _default_file_name(sample: ShapesScene) -> str:
    return f"{sample.name}.png"


def _image_entry(sample: ShapesScene, file_name: str) -> dict[str, Any]:
    height, width = sample.semantic.shape
    return {"id": sample.index + 1, "file_name": file_name, "height": int(height), "width": int(width)}


def instance_annotations(sample: ShapesScene, first_id: int = 1) -> list[dict[str, Any]]:
    """COCO annotations (RLE masks) of a sample's kept instances, numbered from ``first_id``."""
    return [
        {
            "id": first_id + k,
            "image_id": sample.index + 1,
            "category_id": inst.category + 1,
            "segmentation": _encode_rle(inst.mask),
            "area": inst.area,
            "bbox": list(inst.bbox),
            "iscrowd": 0,
        }
        for k, inst in enumerate(sample.instances)
    ]


def _thing_categories() -> list[dict[str, Any]]:
    return [{"id": c.id, "name": c.name, "supercategory": "shape"} for c in CATEGORIES if c.isthing]


def _panoptic_categories() -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "name": c.name,
            "supercategory": "shape" if c.isthing else "scene",
            "isthing": int(c.isthing),
            "color": list(c.color),
        }
        for c in CATEGORIES
    ]


_INFO = {"description": "segbench synthetic shapes", "version": "1.0"}


def _instances_dict(images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "info": dict(_INFO),
        "images": images,
        "annotations": annotations,
        "categories": _thing_categories(),
    }


def _panoptic_dict(images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "info": dict(_INFO),
        "images": images,
        "annotations": annotations,
        "categories": _panoptic_categories(),
    }


def coco_instances(dataset: Sequence[ShapesScene], file_names: FileNames | None = None) -> dict[str, Any]:
    """COCO instances dict (RLE masks) for every sample; image id = index + 1, things only.

    ``file_names`` maps a sample to its image file name (default ``{name}.png``).
    """
    name_of = file_names or _default_file_name
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for sample in dataset:
        images.append(_image_entry(sample, name_of(sample)))
        annotations.extend(instance_annotations(sample, len(annotations) + 1))
    return _instances_dict(images, annotations)


def _unique_segment_id(color: tuple[int, int, int], used: set[int]) -> int:
    """A nonzero id near ``color`` that is not in ``used`` (which it is then added to).

    Ids are jittered category colours, as in panopticapi, so the PNG doubles as a visualisation.
    """
    side = 41  # offsets per channel: -20..20
    cube = side**3
    centre = 20 + 20 * side + 20 * side * side  # the (0, 0, 0) offset, so step 0 is the colour itself
    for step in range(cube):
        # 7919 is coprime with 41**3, so the steps visit every offset once, in a scattered order.
        code = (centre + step * 7919) % cube
        offsets = (code % side - 20, code // side % side - 20, code // (side * side) - 20)
        r, g, b = (min(max(c + d, 0), 255) for c, d in zip(color, offsets, strict=True))
        candidate = r + 256 * g + 65536 * b
        if candidate != 0 and candidate not in used:
            used.add(candidate)
            return candidate
    # Thousands of segments of one category near one colour: give up on the colour hint.
    candidate = next(i for i in itertools.count(1) if i not in used)
    used.add(candidate)
    return candidate


def panoptic_ids_and_segments(sample: ShapesScene) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Segment-id map (HxW uint32) and ``segments_info`` of one sample.

    One segment per stuff class present and one per kept instance; ``IGNORE_INDEX`` pixels
    (dropped fragments) get id 0, which COCO panoptic treats as void.
    """
    ids = np.zeros(sample.semantic.shape, np.uint32)
    used: set[int] = set()
    segments: list[dict[str, Any]] = []

    def add(mask: np.ndarray, category_index: int) -> None:
        segment_id = _unique_segment_id(CATEGORIES[category_index].color, used)
        ids[mask] = segment_id
        segments.append(
            {
                "id": segment_id,
                "category_id": CATEGORIES[category_index].id,
                "area": int(np.count_nonzero(mask)),
                "bbox": _mask_bbox(mask),
                "iscrowd": 0,
            }
        )

    for stuff_index in range(len(STUFF_CLASSES)):
        mask = sample.semantic == stuff_index
        if mask.any():
            add(mask, stuff_index)
    for inst in sample.instances:
        add(inst.mask, inst.category)
    # Kept instances and stuff already cover everything else; this just makes void explicit.
    ids[sample.semantic == IGNORE_INDEX] = 0
    return ids, segments


def panoptic_png_and_segments(sample: ShapesScene) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """COCO panoptic PNG (HxWx3 uint8) and ``segments_info`` of one sample (see
    :func:`panoptic_ids_and_segments`)."""
    ids, segments = panoptic_ids_and_segments(sample)
    return id_to_rgb(ids), segments


def _panoptic_annotation(sample: ShapesScene, segments: list[dict[str, Any]]) -> dict[str, Any]:
    return {"image_id": sample.index + 1, "file_name": f"{sample.name}.png", "segments_info": segments}


def coco_panoptic(dataset: Sequence[ShapesScene], file_names: FileNames | None = None) -> dict[str, Any]:
    """COCO panoptic dict; ``file_names`` names the images, annotations use ``{name}.png`` PNGs."""
    name_of = file_names or _default_file_name
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for sample in dataset:
        images.append(_image_entry(sample, name_of(sample)))
        annotations.append(_panoptic_annotation(sample, panoptic_png_and_segments(sample)[1]))
    return _panoptic_dict(images, annotations)


def _write_png(path: Path, array: np.ndarray) -> None:
    # uint8 HxW -> mode "L", HxWx3 -> "RGB": Pillow infers both from the array.
    Image.fromarray(array).save(path, format="PNG")


def write_shapes_dataset(root: str | Path, dataset: Iterable[ShapesScene]) -> Path:
    """Write images, semantic label PNGs, panoptic PNGs and COCO JSONs under ``root``.

    Layout: ``images/{name}.png``, ``semantic/{name}.png`` (mode "L"), ``panoptic/{name}.png``,
    ``instances.json``, ``panoptic.json``. Each sample is generated once. Same-named files are
    overwritten and nothing is deleted, so write into a fresh ``root`` to avoid stale PNGs from an
    earlier, larger dataset. Returns ``root``.
    """
    root = Path(root)
    dirs = {key: root / key for key in ("images", "semantic", "panoptic")}
    for directory in dirs.values():
        directory.mkdir(parents=True, exist_ok=True)

    images: list[dict[str, Any]] = []
    thing_annotations: list[dict[str, Any]] = []
    panoptic_annotations: list[dict[str, Any]] = []
    for sample in dataset:
        file_name = _default_file_name(sample)
        _write_png(dirs["images"] / file_name, sample.image)
        _write_png(dirs["semantic"] / file_name, sample.semantic)
        png, segments = panoptic_png_and_segments(sample)
        _write_png(dirs["panoptic"] / file_name, png)
        images.append(_image_entry(sample, file_name))
        thing_annotations.extend(instance_annotations(sample, len(thing_annotations) + 1))
        panoptic_annotations.append(_panoptic_annotation(sample, segments))

    # A crash mid-write must not leave a truncated JSON that later loads as "invalid".
    atomic_write_text(root / "instances.json", json.dumps(_instances_dict(images, thing_annotations)))
    atomic_write_text(root / "panoptic.json", json.dumps(_panoptic_dict(images, panoptic_annotations)))
    return root
