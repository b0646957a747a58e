"""A hand-built COCO-format dataset on disk: polygons, compressed and uncompressed RLE, a crowd region,
a grey image, categories other than the shapes' (ids 7, 8 things and 9 stuff), non-consecutive image ids.

Shared by the data tests (reading it) and the metrics tests (evaluating on it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from segbench.data import id_to_rgb

HEIGHT, WIDTH = 40, 48
PERSON, CAR, GRASS = 7, 8, 9
IMAGE_IDS = (11, 30)


def square_polygon(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    return [float(v) for v in (x0, y0, x1, y0, x1, y1, x0, y1)]


def disc(cy: int, cx: int, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius


def compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's crowd encoding: run lengths over the column-major pixels, starting with a 0-run."""
    flat = mask.astype(np.uint8).ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": [HEIGHT, WIDTH], "counts": counts}


def decoded(segmentation: Any) -> np.ndarray:
    """pycocotools' own decoding, as COCO.annToMask does it."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, HEIGHT, WIDTH))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, HEIGHT, WIDTH)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def annotations() -> list[dict[str, Any]]:
    """Instance annotations: image 11 has a polygon person, an RLE car and a crowd of persons; image
    30 a car drawn as two polygons. No area or bbox: the metrics fill them in."""
    return [
        {"id": 5, "image_id": 11, "category_id": PERSON, "segmentation": [square_polygon(4, 6, 16, 30)]},
        {"id": 6, "image_id": 11, "category_id": CAR, "segmentation": compressed_rle(disc(12, 34, 7))},
        {
            "id": 7,
            "image_id": 11,
            "category_id": PERSON,
            "segmentation": uncompressed_rle(disc(33, 36, 4)),
            "iscrowd": 1,
        },
        {
            "id": 9,
            "image_id": 30,
            "category_id": CAR,
            "segmentation": [square_polygon(2, 2, 10, 10), square_polygon(20, 20, 30, 28)],
        },
    ]


def images() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        11: rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8),
        30: rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8),  # grey, read back as RGB
    }


def panoptic_annotation(image_id: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The image's id map: grass (stuff) everywhere, then each instance drawn over it in order."""
    ids = np.full((HEIGHT, WIDTH), 1, np.uint32)
    segments = [{"id": 1, "category_id": GRASS, "iscrowd": 0}]
    for ann in annotations():
        if ann["image_id"] == image_id:
            segment_id = len(segments) + 1
            ids[decoded(ann["segmentation"])] = segment_id
            segments.append(
                {"id": segment_id, "category_id": ann["category_id"], "iscrowd": ann.get("iscrowd", 0)}
            )
    return ids, segments


def write_coco_dataset(root: Path, panoptic: bool = True) -> Path:
    """``root/images``, ``root/instances_val.json`` and (with ``panoptic``) ``root/panoptic_val.json``
    with its PNGs in ``root/panoptic_val``. Returns ``root``."""
    (root / "images").mkdir(parents=True)
    entries = []
    for image_id, pixels in images().items():
        file_name = f"{image_id:012d}.png"
        Image.fromarray(pixels).save(root / "images" / file_name)
        entries.append({"id": image_id, "file_name": file_name, "height": HEIGHT, "width": WIDTH})
    things = [{"id": PERSON, "name": "person"}, {"id": CAR, "name": "car"}]
    instances = {"images": entries, "annotations": annotations(), "categories": things}
    (root / "instances_val.json").write_text(json.dumps(instances))
    if panoptic:
        (root / "panoptic_val").mkdir()
        pan_annotations = []
        for image_id in IMAGE_IDS:
            ids, segments = panoptic_annotation(image_id)
            file_name = f"{image_id:012d}.png"
            Image.fromarray(id_to_rgb(ids)).save(root / "panoptic_val" / file_name)
            pan_annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
        categories = [{**c, "isthing": 1} for c in things] + [{"id": GRASS, "name": "grass", "isthing": 0}]
        data = {"images": entries, "annotations": pan_annotations, "categories": categories}
        (root / "panoptic_val.json").write_text(json.dumps(data))
    return root
