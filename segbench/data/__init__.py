"""Datasets: the deterministic synthetic "shapes" scenes, COCO encodings, and readers for real data."""

from segbench.data.coco import (
    coco_instances,
    coco_panoptic,
    id_to_rgb,
    panoptic_png_and_segments,
    rgb_to_id,
    write_shapes_dataset,
)
from segbench.data.readers import (
    SemanticFolder,
    SemanticSample,
    ShapesSemantic,
    load_coco_instances,
    load_coco_panoptic,
    read_panoptic_png,
)
from segbench.data.shapes import (
    CATEGORIES,
    CLASSES,
    IGNORE_INDEX,
    NUM_CLASSES,
    STUFF_CLASSES,
    THING_CLASSES,
    Category,
    Instance,
    ShapesDataset,
    ShapesSample,
)

__all__ = [
    "CATEGORIES",
    "CLASSES",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "STUFF_CLASSES",
    "THING_CLASSES",
    "Category",
    "Instance",
    "SemanticFolder",
    "SemanticSample",
    "ShapesDataset",
    "ShapesSample",
    "ShapesSemantic",
    "coco_instances",
    "coco_panoptic",
    "id_to_rgb",
    "load_coco_instances",
    "load_coco_panoptic",
    "panoptic_png_and_segments",
    "read_panoptic_png",
    "rgb_to_id",
    "write_shapes_dataset",
]
