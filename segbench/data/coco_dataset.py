"""A COCO-format dataset on disk as evaluation samples: an images folder with an instances JSON, a
panoptic JSON and PNG folder, or both.

The samples provide the instance and panoptic ground truth of :mod:`segbench.data.ground_truth`, so
the task metrics evaluate COCO, or any dataset exported in its format (``segbench data --out`` writes
the synthetic scenes that way), exactly as they evaluate the in-memory scenes. The JSON files are read
and checked once, on construction; an image (and its panoptic PNG) is read when its sample is. Every
problem with the files is one :class:`~segbench.errors.DatasetError` line naming the path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
from pycocotools import mask as mask_utils

from segbench.data.ground_truth import CategoryInfo, PanopticTruth
from segbench.data.readers import (
    check_image_files,
    load_coco_instances,
    load_coco_panoptic,
    read_panoptic_png,
    read_rgb_image,
    resolve_index,
)
from segbench.errors import DatasetError

PathLike = str | os.PathLike[str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _compressed_counts(text: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string, or None when it is not one.

    pycocotools' own decoder writes runs without a bounds check, so a corrupt string must be caught
    before it gets there: this is its format (5-bit groups offset from '0', the 0x20 bit continuing a
    number, 0x10 signing the last group; from the third run on, a delta to the run two before).
    """
    counts: list[int] = []
    position = 0
    while position < len(text):
        value = shift = 0
        while True:
            if position == len(text):
                return None
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << shift
            shift += 5
            position += 1
            if not code & 0x20:
                if code & 0x10:
                    value -= 1 << shift
                break
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _segmentation_problem(segmentation: Any, height: int, width: int) -> str | None:
    """Why ``segmentation`` is not a COCO polygon list or RLE of an ``height`` x ``width`` image, or None.

    Checked up front because pycocotools fails on malformed input with bare C-level errors, or, for a
    four-number "polygon", silently reads it as a box.
    """
    if isinstance(segmentation, list):
        if not segmentation:
            return "an empty polygon list"
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
                return "a polygon that is not a list of numbers"
            if len(polygon) < 6 or len(polygon) % 2:
                return f"a polygon with {len(polygon)} coordinates (needs an even number, at least 6)"
        return None
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not isinstance(size, list) or len(size) != 2 or not all(_is_int(v) for v in size):
            return "an RLE without a [height, width] 'size'"
        if tuple(size) != (height, width):
            return f"an RLE of size {size[0]}x{size[1]} on a {height}x{width} image"
        if isinstance(counts, str):
            counts = _compressed_counts(counts)
            if counts is None:
                return "an RLE whose 'counts' string is corrupt"
        elif not isinstance(counts, list):
            return "an RLE without 'counts'"
        if not all(_is_int(v) and v >= 0 for v in counts) or sum(counts) != height * width:
            return "an RLE whose runs do not add up to the image's pixels"
        return None
    return f"a {type(segmentation).__name__} (expected polygons or an RLE)"


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The HxW bool mask of a COCO ``segmentation`` (polygons, uncompressed or compressed RLE)."""
    problem = _segmentation_problem(segmentation, height, width)
    if problem:
        raise DatasetError(f"segmentation is {problem}")
    try:
        if isinstance(segmentation, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        return mask_utils.decode(rle).astype(bool)
    except (TypeError, ValueError, IndexError) as exc:  # checked above; kept so nothing escapes unnamed
        raise DatasetError(f"cannot decode segmentation: {' '.join(str(exc).split())}") from None


@dataclass(eq=False)
class CocoSample:
    """One image of a COCO-format dataset with its instance and/or panoptic ground truth.

    ``annotations`` is None without an instances JSON, ``panoptic_png`` without a panoptic one; asking
    for the missing ground truth is a DatasetError. ``eq=False``: ``image`` is an array.
    """

    name: str
    image_id: int
    image: np.ndarray  # HxWx3 uint8 RGB
    categories: tuple[CategoryInfo, ...]
    annotations: list[dict[str, Any]] | None = None
    panoptic_png: Path | None = None
    segments_info: list[dict[str, Any]] | None = None

    def instance_annotations(self) -> list[dict[str, Any]]:
        if self.annotations is None:
            raise DatasetError(f"image {self.name}: the dataset has no instances JSON")
        return list(self.annotations)

    def instance_masks(self) -> np.ndarray:
        """``[N, H, W]`` bool masks of :meth:`instance_annotations`, decoded by pycocotools."""
        height, width = self.image.shape[:2]
        masks = [annotation_mask(ann["segmentation"], height, width) for ann in self.instance_annotations()]
        return np.stack(masks) if masks else np.zeros((0, height, width), bool)

    def panoptic_truth(self) -> PanopticTruth:
        if self.panoptic_png is None or self.segments_info is None:
            raise DatasetError(f"image {self.name}: the dataset has no panoptic JSON")
        id_map = read_panoptic_png(self.panoptic_png)
        if id_map.shape != self.image.shape[:2]:
            raise DatasetError(
                f"panoptic PNG {self.panoptic_png} is {id_map.shape[1]}x{id_map.shape[0]} but image "
                f"{self.name} is {self.image.shape[1]}x{self.image.shape[0]}"
            )
        return PanopticTruth(id_map, self.segments_info)


def _categories(
    instances: dict[str, Any] | None, panoptic: dict[str, Any] | None, path: Path
) -> tuple[CategoryInfo, ...]:
    """The panoptic JSON's categories when there is one (it says which are things), else the instances
    JSON's, all things; the instance categories must be things of the panoptic list."""
    for data in (instances, panoptic):
        for c in data["categories"] if data is not None else ():
            if not _is_int(c["id"]):
                raise DatasetError(f"{path}: category id {c['id']!r} is not an integer")
    if panoptic is not None:
        categories = tuple(
            CategoryInfo(int(c["id"]), str(c.get("name", c["id"])), bool(c.get("isthing", 1)))
            for c in panoptic["categories"]
        )
    else:
        assert instances is not None
        categories = tuple(
            CategoryInfo(int(c["id"]), str(c.get("name", c["id"])), True) for c in instances["categories"]
        )
    if instances is not None and panoptic is not None:
        things = {c.id for c in categories if c.isthing}
        for c in instances["categories"]:
            if c["id"] not in things:
                raise DatasetError(f"{path}: category {c['id']} is not a thing in the panoptic JSON")
    return categories


def _check_images(path: Path, images: list[dict[str, Any]]) -> None:
    for position, entry in enumerate(images):
        if not _is_int(entry["id"]):
            raise DatasetError(f"{path}: images[{position}] id {entry['id']!r} is not an integer")
        if not isinstance(entry.get("file_name"), str) or not entry["file_name"]:
            raise DatasetError(f"{path}: images[{position}] has no 'file_name'")
        if not all(_is_int(entry.get(key)) and entry[key] > 0 for key in ("height", "width")):
            raise DatasetError(f"{path}: images[{position}] needs positive integer 'height' and 'width'")


def _check_annotations(path: Path, image: dict[str, Any], annotations: list[dict[str, Any]]) -> None:
    for ann in annotations:
        label = f"annotation {ann['id']}" if "id" in ann else f"an annotation of image {image['id']}"
        if "segmentation" not in ann:
            raise DatasetError(f"{path}: {label} has no 'segmentation' (instance masks are evaluated)")
        problem = _segmentation_problem(ann["segmentation"], image["height"], image["width"])
        if problem:
            raise DatasetError(f"{path}: {label}: segmentation is {problem}")


def _annotations_of(
    path: Path, instances: dict[str, Any], images: list[dict[str, Any]]
) -> dict[int, list[dict[str, Any]]]:
    """Each image's instance annotations, their segmentations checked."""
    by_image: dict[int, list[dict[str, Any]]] = {entry["id"]: [] for entry in images}
    for ann in instances["annotations"]:
        if ann["image_id"] in by_image:
            by_image[ann["image_id"]].append(ann)
    for entry in images:
        _check_annotations(path, entry, by_image[entry["id"]])
    return by_image


def _panoptic_of(
    path: Path, panoptic: dict[str, Any], images: list[dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """Each image's panoptic annotation (PNG file name and segments_info)."""
    by_image = {ann["image_id"]: ann for ann in panoptic["annotations"]}
    for entry in images:
        if entry["id"] not in by_image:
            raise DatasetError(f"{path}: no panoptic annotation for image id {entry['id']!r}")
    return {entry["id"]: by_image[entry["id"]] for entry in images}


class CocoDataset(Sequence[CocoSample]):
    """Images of a COCO-format dataset, in the JSON's order, with their instance and panoptic ground truth.

    ``instances_json`` (COCO ``instances_*.json``: polygon or RLE masks) and ``panoptic_json`` (COCO
    ``panoptic_*.json``) are each optional, but one is needed; with both, the images are the instances
    JSON's and each needs a panoptic annotation. ``panoptic_dir`` holds the panoptic PNGs (default: the
    panoptic JSON's path without ``.json``). ``limit`` keeps the first images only.
    """

    def __init__(
        self,
        images_dir: PathLike,
        instances_json: PathLike | None = None,
        panoptic_json: PathLike | None = None,
        panoptic_dir: PathLike | None = None,
        limit: int | None = None,
    ) -> None:
        if limit is not None and limit < 0:
            raise DatasetError(f"{images_dir}: limit must be >= 0, got {limit}")
        if instances_json is None and panoptic_json is None:
            raise DatasetError(f"{images_dir}: a COCO dataset needs an instances JSON or a panoptic JSON")
        self.images_dir = Path(images_dir)
        self.panoptic_dir: Path | None = None
        instances: dict[str, Any] | None = None
        panoptic: dict[str, Any] | None = None
        if panoptic_json is not None:
            panoptic_path = Path(panoptic_json)
            self.panoptic_dir = (
                Path(panoptic_dir) if panoptic_dir is not None else panoptic_path.with_suffix("")
            )
            panoptic = load_coco_panoptic(panoptic_path, self.panoptic_dir)
            path, source = panoptic_path, panoptic
        if instances_json is not None:
            # The instances JSON, when given, lists the images and is the path errors about them name.
            path = Path(instances_json)
            instances = source = load_coco_instances(path, self.images_dir)
        else:
            check_image_files(path, source, self.images_dir)
        self.categories = _categories(instances, panoptic, path)
        self._images: list[dict[str, Any]] = source["images"][:limit]
        _check_images(path, self._images)
        self._annotations = None if instances is None else _annotations_of(path, instances, self._images)
        self._panoptic = None if panoptic is None else _panoptic_of(panoptic_path, panoptic, self._images)

    def __len__(self) -> int:
        return len(self._images)

    @overload
    def __getitem__(self, index: int) -> CocoSample: ...

    @overload
    def __getitem__(self, index: slice) -> list[CocoSample]: ...

    def __getitem__(self, index: int | slice) -> CocoSample | list[CocoSample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        entry = self._images[resolve_index(index, len(self), "CocoDataset")]
        image_path = self.images_dir / entry["file_name"]
        image = read_rgb_image(image_path)
        if image.shape[:2] != (entry["height"], entry["width"]):
            # The masks are drawn on the JSON's size: a resized image would be scored against shifted ones.
            raise DatasetError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but the JSON says "
                f"{entry['width']}x{entry['height']}"
            )
        sample = CocoSample(
            name=Path(entry["file_name"]).with_suffix("").as_posix(),
            image_id=entry["id"],
            image=image,
            categories=self.categories,
        )
        if self._annotations is not None:
            sample.annotations = self._annotations[entry["id"]]
        if self._panoptic is not None:
            assert self.panoptic_dir is not None
            ann = self._panoptic[entry["id"]]
            sample.panoptic_png = self.panoptic_dir / ann["file_name"]
            sample.segments_info = ann["segments_info"]
        return sample

    def __repr__(self) -> str:
        return f"CocoDataset({str(self.images_dir)!r}, {len(self)} images)"
