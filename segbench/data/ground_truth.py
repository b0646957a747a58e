"""The ground truth the task metrics read, the same for every dataset.

The metrics (:mod:`segbench.metrics.tasks`) see evaluation samples only through these protocols, so the
synthetic scenes (:class:`~segbench.data.shapes.ShapesSample`), a COCO-format dataset on disk
(:class:`~segbench.data.coco_dataset.CocoSample`) and image/mask folders
(:class:`~segbench.data.readers.SemanticSample`) are evaluated by the same code:

* semantic: ``image`` and ``label`` (:class:`SemanticGroundTruth`);
* instance: ``image``, ``image_id`` and the image's COCO annotations; :func:`instances_ground_truth`
  turns a set of samples into the COCO instances dict pycocotools evaluates (:class:`InstanceGroundTruth`);
* panoptic: ``image``, ``image_id`` and the segment-id map with its ``segments_info``
  (:class:`PanopticGroundTruth`).

Instance and panoptic samples also carry their dataset's ``categories``: a chunk of samples is all the
metrics get, so the category list travels with each sample (one shared tuple, not a copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class CategoryInfo:
    """One dataset category: COCO ``id``, ``name`` and whether it is a countable thing."""

    id: int
    name: str
    isthing: bool

    def as_coco(self) -> dict[str, Any]:
        """The COCO ``categories`` entry (``isthing`` as 0/1, as in COCO panoptic JSON)."""
        return {"id": self.id, "name": self.name, "isthing": int(self.isthing)}


@dataclass(eq=False)
class PanopticTruth:
    """One image's panoptic ground truth. ``eq=False``: ``id_map`` is an array."""

    id_map: np.ndarray  # HxW integer segment ids, 0 = void
    segments: list[dict[str, Any]]  # COCO segments_info: id, category_id, iscrowd (area, bbox optional)


@runtime_checkable
class SemanticGroundTruth(Protocol):
    """An image with its dense class-index label map (``ignore_index`` for void)."""

    @property
    def name(self) -> str: ...

    @property
    def image(self) -> np.ndarray: ...  # HxWx3 uint8 RGB

    @property
    def label(self) -> np.ndarray: ...  # HxW class indices


@runtime_checkable
class InstanceGroundTruth(Protocol):
    """An image with its COCO instance annotations."""

    @property
    def name(self) -> str: ...

    @property
    def image(self) -> np.ndarray: ...  # HxWx3 uint8 RGB

    @property
    def image_id(self) -> int: ...  # the COCO image id, unique within the dataset

    @property
    def categories(self) -> Sequence[CategoryInfo]: ...  # the whole dataset's, things and stuff

    def instance_annotations(self) -> list[dict[str, Any]]:
        """COCO annotations of this image (``image_id`` = :attr:`image_id`; ``segmentation`` as
        polygons or RLE; ``iscrowd``, ``area`` and ``bbox`` may be missing)."""
        ...


@runtime_checkable
class PanopticGroundTruth(Protocol):
    """An image with its panoptic segment-id map and ``segments_info``."""

    @property
    def name(self) -> str: ...

    @property
    def image(self) -> np.ndarray: ...  # HxWx3 uint8 RGB

    @property
    def image_id(self) -> int: ...

    @property
    def categories(self) -> Sequence[CategoryInfo]: ...

    def panoptic_truth(self) -> PanopticTruth: ...


def dataset_categories(samples: Sequence[InstanceGroundTruth | PanopticGroundTruth]) -> list[CategoryInfo]:
    """The category list the samples share (empty for no samples)."""
    if not samples:
        return []
    categories = list(samples[0].categories)
    for sample in samples[1:]:
        # Usually the very same tuple: compare identity first, it is free.
        if sample.categories is not samples[0].categories and list(sample.categories) != categories:
            raise ValueError(f"sample {sample.name} has other categories than sample {samples[0].name}")
    return categories


def instances_ground_truth(samples: Sequence[InstanceGroundTruth]) -> dict[str, Any]:
    """The COCO instances dict (images, annotations, thing categories) of ``samples``.

    Image entries take their size from the sample's image; annotation ids are left as the samples give
    them (:func:`segbench.metrics.instance.evaluate_instances` renumbers its own copy).
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    seen: set[int] = set()
    for sample in samples:
        image_id = int(sample.image_id)
        if image_id in seen:
            # pycocotools would silently merge the two images' annotations.
            raise ValueError(f"image id {image_id} appears twice among the samples")
        seen.add(image_id)
        height, width = np.asarray(sample.image).shape[:2]
        images.append({"id": image_id, "file_name": sample.name, "height": int(height), "width": int(width)})
        annotations.extend(sample.instance_annotations())
    # Stuff categories have no instances; COCOeval would skip them anyway, as it does any category
    # without ground truth.
    things = [c.as_coco() for c in dataset_categories(samples) if c.isthing]
    return {"images": images, "annotations": annotations, "categories": things}
