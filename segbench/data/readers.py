"""Readers for segmentation data on disk: image/mask folders and COCO instances/panoptic JSON.

Every problem with user-supplied data raises :class:`~segbench.errors.DatasetError` with a single
line that names the offending path, because the CLI prints exactly that line to the user.
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image

from segbench.data.coco import rgb_to_id
from segbench.data.shapes import IGNORE_INDEX, ShapesDataset
from segbench.errors import DatasetError

# Single-channel modes that hold class indices: 8-bit grey, VOC-style palette (read as the
# indices, not the colours), 16/32-bit integer labels and bilevel masks.
_LABEL_MODES = {"L", "P", "I", "I;16", "I;16B", "I;16L", "1"}


@dataclass(eq=False)
class SemanticSample:
    """An image with its dense class-index label map. ``eq=False``: fields are numpy arrays."""

    name: str
    image: np.ndarray  # HxWx3 uint8 RGB
    label: np.ndarray  # HxW uint8/int64 class indices, ignore_index for void


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DatasetError(f"{what} not found: {path}")
    if not path.is_dir():
        raise DatasetError(f"{what} is not a directory: {path}")


def _open_image(path: Path, what: str) -> Image.Image:
    """Open and fully decode ``path``; any decoding failure becomes a one-line DatasetError."""
    try:
        with Image.open(path) as img:
            img.load()
            # Leaving the with-block closes and invalidates img; the copy is decoded and detached.
            return img.copy()
    except FileNotFoundError:
        raise DatasetError(f"{what} not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # Pillow raises UnidentifiedImageError (an OSError) for non-images, OSError for truncated
        # files and SyntaxError/ValueError from some broken PNG chunks.
        raise DatasetError(f"cannot read {what} {path}: {_one_line(exc)}") from None


def resolve_index(index: Any, length: int, owner: str) -> int:
    i = operator.index(index)
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"index {index} out of range for {owner} of length {length}")
    return i


def read_rgb_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (grey and palette images converted); a DatasetError if unreadable."""
    # No EXIF transpose: annotations are aligned with the stored pixel grid, not the display.
    return np.asarray(_open_image(Path(path), "image").convert("RGB"))


class SemanticFolder(Sequence[SemanticSample]):
    """Images paired with single-channel class-index masks by file stem (VOC/Cityscapes/ADE20K style).

    The directory listing and pairing are checked on construction; file contents are checked when
    a sample is read. Masks are used as stored: void pixels are expected to hold ``ignore_index``.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike[str],
        masks_dir: str | os.PathLike[str],
        ignore_index: int = IGNORE_INDEX,
        image_exts: Iterable[str] = (".jpg", ".jpeg", ".png"),
        mask_ext: str = ".png",
    ) -> None:
        self.images_dir = Path(images_dir)
        self.masks_dir = Path(masks_dir)
        self.ignore_index = int(ignore_index)
        exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in image_exts}
        self.mask_ext = mask_ext if mask_ext.startswith(".") else f".{mask_ext}"
        _require_dir(self.images_dir, "images directory")
        _require_dir(self.masks_dir, "masks directory")

        images = sorted(p for p in self.images_dir.iterdir() if p.suffix.lower() in exts and p.is_file())
        if not images:
            raise DatasetError(f"no images ({', '.join(sorted(exts))}) in {self.images_dir}")
        # One listing instead of a stat() per image: cheap even for ADE20K-sized folders.
        mask_names = {p.name for p in self.masks_dir.iterdir()}
        pairs: list[tuple[Path, Path]] = []
        seen: dict[str, Path] = {}
        for image_path in images:
            stem = image_path.stem
            if stem in seen:
                raise DatasetError(
                    f"images {seen[stem]} and {image_path} share the stem {stem!r}; cannot pair masks"
                )
            seen[stem] = image_path
            mask_path = self.masks_dir / f"{stem}{self.mask_ext}"
            if mask_path.name not in mask_names:
                raise DatasetError(f"no mask for image {image_path}: expected {mask_path}")
            pairs.append((image_path, mask_path))
        self._pairs = pairs

    def __len__(self) -> int:
        return len(self._pairs)

    @property
    def pairs(self) -> list[tuple[Path, Path]]:
        """``(image_path, mask_path)`` for every sample, sorted by image file name."""
        return list(self._pairs)

    @overload
    def __getitem__(self, index: int) -> SemanticSample: ...

    @overload
    def __getitem__(self, index: slice) -> list[SemanticSample]: ...

    def __getitem__(self, index: int | slice) -> SemanticSample | list[SemanticSample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        image_path, mask_path = self._pairs[resolve_index(index, len(self), "SemanticFolder")]
        img = _open_image(image_path, "image")
        mask = _open_image(mask_path, "mask")
        if mask.mode not in _LABEL_MODES:
            raise DatasetError(
                f"mask {mask_path} has mode {mask.mode!r}; expected a single-channel or palette label PNG"
            )
        if mask.size != img.size:
            raise DatasetError(
                f"mask {mask_path} is {mask.size[0]}x{mask.size[1]} but image {image_path} is "
                f"{img.size[0]}x{img.size[1]}"
            )
        # No EXIF transpose: label maps are aligned with the stored pixel grid, not the display.
        image = np.asarray(img.convert("RGB"))
        label = np.asarray(mask)
        label = label.astype(np.uint8) if label.dtype == bool else label
        if label.dtype != np.uint8:
            label = label.astype(np.int64)
        return SemanticSample(name=image_path.stem, image=image, label=label)


class ShapesSemantic(Sequence[SemanticSample]):
    """A :class:`ShapesDataset` seen as semantic-segmentation samples (label = ``semantic``)."""

    def __init__(self, dataset: ShapesDataset) -> None:
        self.dataset = dataset
        self.ignore_index = IGNORE_INDEX

    def __len__(self) -> int:
        return len(self.dataset)

    @overload
    def __getitem__(self, index: int) -> SemanticSample: ...

    @overload
    def __getitem__(self, index: slice) -> list[SemanticSample]: ...

    def __getitem__(self, index: int | slice) -> SemanticSample | list[SemanticSample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        sample = self.dataset[index]
        return SemanticSample(name=sample.name, image=sample.image, label=sample.semantic)


# --------------------------------------------------------------------------------------------------
# COCO JSON


def load_json(path: Path, what: str, expected: type = dict) -> Any:
    """A JSON file whose top level is ``expected`` (an object, or a list for COCO results); every problem
    is a one-line DatasetError naming ``what`` and the path."""
    if not path.exists():
        raise DatasetError(f"{what} not found: {path}")
    if not path.is_file():
        raise DatasetError(f"{what} is not a file: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON: {_one_line(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {what} {path}: {_one_line(exc)}") from None
    if not isinstance(data, expected):
        kind = "object" if expected is dict else expected.__name__
        raise DatasetError(f"{path}: expected a JSON {kind} at top level, got {type(data).__name__}")
    return data


def _validate_coco(path: Path, data: dict[str, Any]) -> None:
    """Top-level keys, id fields, and references from annotations to images and categories."""
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise DatasetError(f"{path}: missing required key(s) {', '.join(repr(k) for k in missing)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise DatasetError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}")
    for key in ("images", "categories"):
        for position, entry in enumerate(data[key]):
            if not isinstance(entry, dict) or "id" not in entry:
                raise DatasetError(f"{path}: {key}[{position}] has no 'id'")
    image_ids = {entry["id"] for entry in data["images"]}
    if len(image_ids) != len(data["images"]):
        raise DatasetError(f"{path}: duplicate image ids in 'images'")
    for position, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise DatasetError(f"{path}: annotations[{position}] has no 'image_id'")
        if ann["image_id"] not in image_ids:
            label = f"annotation id {ann['id']}" if "id" in ann else f"annotations[{position}]"
            raise DatasetError(f"{path}: {label} refers to unknown image_id {ann['image_id']!r}")


def _check_category_ids(path: Path, data: dict[str, Any], records: Iterable[dict[str, Any]]) -> None:
    category_ids = {entry["id"] for entry in data["categories"]}
    for record in records:
        if record.get("category_id") not in category_ids:
            raise DatasetError(f"{path}: unknown category_id {record.get('category_id')!r} in {record!r:.80}")


def _check_files(directory: Path, names: Iterable[str], path: Path, what: str) -> None:
    """Every name exists under ``directory`` (one listing, stat only for nested names)."""
    listed = set(os.listdir(directory))
    missing = [n for n in names if (n not in listed if "/" not in n else not (directory / n).is_file())]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(f"{path}: {what} {directory / missing[0]} not found{more}")


def check_image_files(
    json_path: str | os.PathLike[str], data: dict[str, Any], images_dir: str | os.PathLike[str]
) -> None:
    """Every image a COCO dict (read from ``json_path``) lists is a file under ``images_dir``."""
    directory = Path(images_dir)
    _require_dir(directory, "images directory")
    names = (str(img.get("file_name", "")) for img in data["images"])
    _check_files(directory, names, Path(json_path), "image")


def load_coco_instances(
    json_path: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Read and validate a COCO instances JSON; with ``images_dir``, also check the images exist."""
    path = Path(json_path)
    data = load_json(path, "COCO instances file")
    _validate_coco(path, data)
    _check_category_ids(path, data, data["annotations"])
    if images_dir is not None:
        check_image_files(path, data, images_dir)
    return data


def load_coco_panoptic(
    json_path: str | os.PathLike[str], png_dir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Read and validate a COCO panoptic JSON and its PNG folder.

    ``png_dir`` defaults to the JSON path without ``.json`` (COCO layout: ``panoptic_val2017.json``
    next to ``panoptic_val2017/``). Every annotation's PNG must exist there.
    """
    path = Path(json_path)
    data = load_json(path, "COCO panoptic file")
    _validate_coco(path, data)
    for position, ann in enumerate(data["annotations"]):
        if "file_name" not in ann or not isinstance(ann.get("segments_info"), list):
            raise DatasetError(
                f"{path}: annotations[{position}] needs 'file_name' and a 'segments_info' list"
            )
        _check_category_ids(path, data, ann["segments_info"])
    directory = Path(png_dir) if png_dir is not None else path.with_suffix("")
    _require_dir(directory, "panoptic PNG directory")
    _check_files(directory, (str(ann["file_name"]) for ann in data["annotations"]), path, "panoptic PNG")
    return data


def read_panoptic_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Segment ids (HxW uint32) of a COCO panoptic PNG."""
    path = Path(path)
    img = _open_image(path, "panoptic PNG")
    if img.mode != "RGB":
        raise DatasetError(f"panoptic PNG {path} has mode {img.mode!r}; expected 'RGB'")
    return rgb_to_id(np.asarray(img))
