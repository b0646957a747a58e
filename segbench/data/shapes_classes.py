"""The shapes dataset's classes and categories, and its instance record: what the scene generator
(:mod:`segbench.data.shapes`) and the COCO encoders (:mod:`segbench.data.coco`) share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segbench.data.ground_truth import CategoryInfo

STUFF_CLASSES = ("sky", "ground", "water")
THING_CLASSES = ("circle", "rectangle", "triangle")
CLASSES = (*STUFF_CLASSES, *THING_CLASSES)  # semantic class index = position in this tuple
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255

SKY, GROUND, WATER, CIRCLE, RECTANGLE, TRIANGLE = range(NUM_CLASSES)


@dataclass(frozen=True)
class Category(CategoryInfo):
    """One COCO category of the shapes dataset (``id`` = semantic index + 1), with its colour."""

    color: tuple[int, int, int]


_CATEGORY_COLORS: tuple[tuple[int, int, int], ...] = (
    (70, 130, 180),  # sky
    (145, 105, 60),  # ground
    (0, 170, 170),  # water
    (220, 20, 60),  # circle
    (250, 170, 30),  # rectangle
    (120, 60, 220),  # triangle
)

CATEGORIES: tuple[Category, ...] = tuple(
    Category(id=index + 1, name=name, isthing=index >= len(STUFF_CLASSES), color=color)
    for index, (name, color) in enumerate(zip(CLASSES, _CATEGORY_COLORS, strict=True))
)


@dataclass(eq=False)
class Instance:
    """One visible thing. ``eq=False``: numpy fields make field-wise ``==`` meaningless."""

    category: int  # semantic class index (3..5)
    mask: np.ndarray  # HxW bool, the VISIBLE part after occlusion
    # Pixels the shape covered inside the image before later shapes were drawn over it;
    # None when unknown (an Instance built by hand rather than by ShapesDataset).
    unoccluded_area: int | None = None

    @property
    def area(self) -> int:
        """Number of visible pixels."""
        return int(np.count_nonzero(self.mask))

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """COCO ``(x, y, w, h)`` of the visible mask; all zeros for an empty mask."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        if rows.size == 0:
            return (0.0, 0.0, 0.0, 0.0)
        return (
            float(cols[0]),
            float(rows[0]),
            float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1),
        )
