"""Datasets: the deterministic synthetic "shapes" scenes, COCO encodings, readers for real data (image/mask
folders, COCO-format datasets), and the ground-truth interface the task metrics read."""

from segbench.data.coco import (
    coco_instances,
    coco_panoptic,
    id_to_rgb,
    panoptic_ids_and_segments,
    panoptic_png_and_segments,
    rgb_to_id,
    write_shapes_dataset,
)
from segbench.data.coco_dataset import CocoDataset, CocoSample, annotation_mask
from segbench.data.ground_truth import (
    CategoryInfo,
    InstanceGroundTruth,
    PanopticGroundTruth,
    PanopticTruth,
    SemanticGroundTruth,
    instances_ground_truth,
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
    "CategoryInfo",
    "CocoDataset",
    "CocoSample",
    "Instance",
    "InstanceGroundTruth",
    "PanopticGroundTruth",
    "PanopticTruth",
    "SemanticFolder",
    "SemanticGroundTruth",
    "SemanticSample",
    "ShapesDataset",
    "ShapesSample",
    "ShapesSemantic",
    "annotation_mask",
    "coco_instances",
    "coco_panoptic",
    "id_to_rgb",
    "instances_ground_truth",
    "load_coco_instances",
    "load_coco_panoptic",
    "panoptic_ids_and_segments",
    "panoptic_png_and_segments",
    "read_panoptic_png",
    "rgb_to_id",
    "write_shapes_dataset",
]
