"""Deterministic synthetic scenes: textured "stuff" regions with occluding geometric "things".

Each image has a sky above a wavy horizon, ground below it, often a water blob or band in the
ground, and 1..``max_instances`` circles, rectangles and triangles drawn on top in order, so later
shapes occlude earlier ones. Every sample is a pure function of ``(seed, split, index)``, which makes
the dataset usable as a reproducible benchmark without any files on disk.
"""

from __future__ import annotations

import colorsys
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from segbench.data.coco import instance_annotations, panoptic_ids_and_segments
from segbench.data.ground_truth import PanopticTruth
from segbench.data.shapes_classes import (  # noqa: F401  (re-exported: the dataset's classes)
    CATEGORIES,
    CIRCLE,
    CLASSES,
    GROUND,
    IGNORE_INDEX,
    NUM_CLASSES,
    RECTANGLE,
    SKY,
    STUFF_CLASSES,
    THING_CLASSES,
    TRIANGLE,
    WATER,
    Category,
    Instance,
)

_SPLIT_CODES = {"train": 0, "val": 1}


@dataclass(eq=False)
class ShapesSample:
    """One generated scene with its dense and per-instance ground truth.

    It is a semantic, instance and panoptic ground truth (:mod:`segbench.data.ground_truth`) as it
    stands, encoded as :func:`~segbench.data.coco.write_shapes_dataset` writes it to disk.
    """

    index: int
    image: np.ndarray  # HxWx3 uint8 RGB
    semantic: np.ndarray  # HxW uint8 class indices, IGNORE_INDEX on dropped fragments
    instances: list[Instance]

    @property
    def name(self) -> str:
        """File stem used on disk, e.g. ``000042``."""
        return f"{self.index:06d}"

    @property
    def image_id(self) -> int:
        """COCO image id: ``index + 1``, as COCO ids start at 1."""
        return self.index + 1

    @property
    def label(self) -> np.ndarray:
        """The semantic label map (``semantic``)."""
        return self.semantic

    @property
    def categories(self) -> tuple[Category, ...]:
        return CATEGORIES

    def instance_annotations(self) -> list[dict[str, Any]]:
        """COCO annotations (RLE masks) of the kept instances, ids from 1."""
        return instance_annotations(self, first_id=1)

    def panoptic_truth(self) -> PanopticTruth:
        """Segment-id map and ``segments_info``: one segment per stuff class present and per instance."""
        return PanopticTruth(*panoptic_ids_and_segments(self))


class ShapesDataset(Sequence[ShapesSample]):
    """Lazily generated synthetic segmentation scenes.

    Sample ``i`` is generated from ``np.random.default_rng([seed, split_code, i])`` (train=0,
    val=1), so it does not depend on access order or on any other index, and the two splits never
    share an image.

    Instances whose visible area after occlusion is below 0.15% of the image (at least 16 px) are
    dropped; their remaining visible pixels are labelled ``IGNORE_INDEX`` in ``semantic`` so the
    semantic, instance and panoptic ground truths stay consistent. Every other pixel holds a stuff
    class, or the thing class of the kept instance visible there. A scene can therefore end up
    with no kept instance at all (about 2% of scenes at the defaults).
    """

    def __init__(
        self,
        num_images: int,
        height: int = 256,
        width: int = 256,
        seed: int = 0,
        split: str = "val",
        max_instances: int = 6,
    ) -> None:
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if height < 32 or width < 32:
            raise ValueError(f"height and width must be >= 32, got {height}x{width}")
        if split not in _SPLIT_CODES:
            raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")
        if max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {max_instances}")
        if seed < 0:
            # numpy's SeedSequence rejects negative entropy; fail here with a clearer message.
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.num_images = int(num_images)
        self.height = int(height)
        self.width = int(width)
        self.seed = int(seed)
        self.split = split
        self.max_instances = int(max_instances)

    def __len__(self) -> int:
        return self.num_images

    @overload
    def __getitem__(self, index: int) -> ShapesSample: ...

    @overload
    def __getitem__(self, index: slice) -> list[ShapesSample]: ...

    def __getitem__(self, index: int | slice) -> ShapesSample | list[ShapesSample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.num_images))]
        i = operator.index(index)
        if i < 0:
            i += self.num_images
        if not 0 <= i < self.num_images:
            raise IndexError(f"index {index} out of range for ShapesDataset of length {self.num_images}")
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], i])
        image, semantic, instances = _render_scene(rng, self.height, self.width, self.max_instances)
        return ShapesSample(index=i, image=image, semantic=semantic, instances=instances)

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(num_images={self.num_images}, height={self.height}, width={self.width}, "
            f"seed={self.seed}, split={self.split!r}, max_instances={self.max_instances})"
        )


# --------------------------------------------------------------------------------------------------
# Rendering


def _value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise in [-1, 1]: random values on a coarse grid, smoothstep-interpolated."""
    grid = rng.uniform(-1.0, 1.0, (int(height / cell) + 2, int(width / cell) + 2)).astype(np.float32)
    ys = (np.arange(height, dtype=np.float32) + 0.5) / cell
    xs = (np.arange(width, dtype=np.float32) + 0.5) / cell
    y0 = ys.astype(np.intp)
    x0 = xs.astype(np.intp)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    # Smoothstep weights hide the coarse grid; plain bilinear leaves visible creases.
    fy = fy * fy * (3.0 - 2.0 * fy)
    fx = fx * fx * (3.0 - 2.0 * fx)
    a = grid[np.ix_(y0, x0)]
    b = grid[np.ix_(y0, x0 + 1)]
    c = grid[np.ix_(y0 + 1, x0)]
    d = grid[np.ix_(y0 + 1, x0 + 1)]
    top = a + (b - a) * fx
    bottom = c + (d - c) * fx
    return top + (bottom - top) * fy


def _jitter(rng: np.random.Generator, color: tuple[float, float, float], amount: float) -> np.ndarray:
    return np.asarray(color, np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32)


def _render_stuff(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stuff label map (HxW uint8) and its texture (HxWx3 float32, before pixel noise)."""
    two_pi = 2.0 * math.pi
    base = rng.uniform(0.3, 0.6) * height
    horizon = np.full(width, base, np.float32)
    for _ in range(2):
        amplitude = rng.uniform(0.02, 0.07) * height
        cycles = rng.uniform(0.5, 3.0)
        horizon += amplitude * np.sin(two_pi * cycles * xx[0] / width + rng.uniform(0.0, two_pi))
    # base in [0.3, 0.6] and |waves| <= 0.14 keep the horizon strictly inside the image,
    # so sky and ground are both present in every scene.
    sky = yy < horizon[None, :]

    kind = rng.choice(3, p=[0.2, 0.4, 0.4])  # none / blob / band
    if kind == 1:
        cx = rng.uniform(0.1, 0.9) * width
        cy = rng.uniform(base + 0.1 * height, 1.05 * height)
        rx = rng.uniform(0.12, 0.35) * width
        ry = rng.uniform(0.06, 0.18) * height
        dx = (xx - cx) / rx
        dy = (yy - cy) / ry
        theta = np.arctan2(dy, dx)
        wobble = (
            1.0
            + 0.12 * np.sin(3.0 * theta + rng.uniform(0.0, two_pi))
            + 0.08 * np.sin(5.0 * theta + rng.uniform(0.0, two_pi))
        )
        water = (dx * dx + dy * dy <= wobble * wobble) & ~sky
    elif kind == 2:
        top = rng.uniform(base + 0.05 * height, 0.85 * height) + rng.uniform(0.01, 0.03) * height * np.sin(
            two_pi * rng.uniform(0.5, 2.0) * xx / width + rng.uniform(0.0, two_pi)
        )
        thickness = rng.uniform(0.08, 0.2) * height
        water = (yy >= top) & (yy < top + thickness) & ~sky
    else:
        water = np.zeros((height, width), bool)

    stuff = np.where(sky, SKY, np.where(water, WATER, GROUND)).astype(np.uint8)

    # Sky: blue gradient from zenith to the (local) horizon.
    zenith = _jitter(rng, (60.0, 115.0, 200.0), 15.0)
    haze = _jitter(rng, (170.0, 205.0, 238.0), 12.0)
    t = np.clip(yy / np.maximum(horizon[None, :], 1.0), 0.0, 1.0)[..., None]
    sky_tex = zenith + (haze - zenith) * t

    # Ground: brown-to-green mix with large blotches and fine grain.
    brown = np.asarray((125.0, 92.0, 58.0), np.float32)
    green = np.asarray((78.0, 122.0, 52.0), np.float32)
    mix = rng.uniform(0.0, 1.0)
    ground_base = brown + (green - brown) * mix + rng.uniform(-12.0, 12.0, 3).astype(np.float32)
    blotch = _value_noise(rng, height, width, cell=rng.uniform(12.0, 24.0))[..., None]
    grain = _value_noise(rng, height, width, cell=3.0)[..., None]
    ground_tex = ground_base + blotch * (green - brown) * 0.6 + grain * 14.0

    # Water: blue-green with horizontal ripple stripes that sway slowly along x.
    water_base = _jitter(rng, (30.0, 115.0, 140.0), 15.0)
    period = rng.uniform(5.0, 10.0)
    sway = 0.8 * np.sin(two_pi * xx / (width * rng.uniform(0.3, 0.6)) + rng.uniform(0.0, two_pi))
    ripples = np.sin(two_pi * yy / period + sway)[..., None]
    water_tex = water_base + ripples * np.asarray((18.0, 26.0, 26.0), np.float32)

    texture = np.where(
        (stuff == SKY)[..., None], sky_tex, np.where((stuff == WATER)[..., None], water_tex, ground_tex)
    )
    return stuff, texture.astype(np.float32, copy=False)


# Hue ranges (degrees) of the thing classes: centres 120° apart, ±75° wide, so neighbouring
# classes share a 30° band and colour alone cannot tell every instance's class.
_THING_HUE_CENTRES = {CIRCLE: 0.0, RECTANGLE: 120.0, TRIANGLE: 240.0}
_THING_HUE_SPREAD = 75.0


def _thing_color(rng: np.random.Generator, category: int) -> np.ndarray:
    hue = (_THING_HUE_CENTRES[category] + rng.uniform(-_THING_HUE_SPREAD, _THING_HUE_SPREAD)) % 360.0
    rgb = colorsys.hsv_to_rgb(hue / 360.0, rng.uniform(0.55, 1.0), rng.uniform(0.6, 1.0))
    return np.asarray(rgb, np.float32) * 255.0


def _shape_mask(
    rng: np.random.Generator,
    category: int,
    cx: float,
    cy: float,
    size: float,
    yy: np.ndarray,
    xx: np.ndarray,
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Rasterise one shape inside its clipped bounding box: ``((y0, y1, x0, x1), local bool mask)``."""
    height, width = yy.shape[0], xx.shape[1]
    if category == CIRCLE:
        reach = size
    elif category == RECTANGLE:
        half_w = size
        half_h = size * rng.uniform(0.4, 1.0)
        # Half of the rectangles stay axis-aligned, like boxes in real data often are.
        angle = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, math.pi)
        reach = math.hypot(half_w, half_h)
    else:
        # Random vertices around the centre, redrawn until the triangle is clearly non-degenerate
        # (area >= 0.15 size^2; an equilateral one of circumradius `size` has ~1.3 size^2).
        while True:
            angles = np.sort(rng.uniform(0.0, 2.0 * math.pi, 3))
            radii = size * rng.uniform(0.6, 1.0, 3)
            vx = cx + radii * np.cos(angles)
            vy = cy + radii * np.sin(angles)
            doubled_area = (vx[1] - vx[0]) * (vy[2] - vy[0]) - (vy[1] - vy[0]) * (vx[2] - vx[0])
            if abs(doubled_area) >= 0.3 * size * size:
                break
        orientation = 1.0 if doubled_area > 0 else -1.0
        reach = float(radii.max())

    # One spare pixel on each side, so an unclipped box never has the shape touching its border
    # (which _outline's edge padding would otherwise leave without an outline).
    y0, y1 = max(0, math.floor(cy - reach) - 1), min(height, math.ceil(cy + reach) + 1)
    x0, x1 = max(0, math.floor(cx - reach) - 1), min(width, math.ceil(cx + reach) + 1)
    box = (y0, max(y0, y1), x0, max(x0, x1))
    ys = yy[box[0] : box[1]]
    xs = xx[:, box[2] : box[3]]
    if category == CIRCLE:
        mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= size * size
    elif category == RECTANGLE:
        cos_a, sin_a = math.cos(angle), math.sin(angle)
        u = (xs - cx) * cos_a + (ys - cy) * sin_a
        v = (ys - cy) * cos_a - (xs - cx) * sin_a
        mask = (np.abs(u) <= half_w) & (np.abs(v) <= half_h)
    else:
        # Point-in-triangle via edge functions, signed by the winding so either order works.
        mask = np.ones((ys.shape[0], xs.shape[1]), bool)
        for k in range(3):
            ax, ay, bx, by = vx[k], vy[k], vx[(k + 1) % 3], vy[(k + 1) % 3]
            mask &= orientation * ((bx - ax) * (ys - ay) - (by - ay) * (xs - ax)) >= 0.0
    return box, mask


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (edge padding: no outline at the box border)."""
    p = np.pad(mask, 1, mode="edge")
    interior = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~interior


def _render_scene(
    rng: np.random.Generator, height: int, width: int, max_instances: int
) -> tuple[np.ndarray, np.ndarray, list[Instance]]:
    yy = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    xx = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    stuff, image = _render_stuff(rng, yy, xx, height, width)

    owner = np.full((height, width), -1, np.int32)  # index of the topmost thing per pixel
    categories: list[int] = []
    full_areas: list[int] = []
    placed: list[tuple[float, float, float]] = []
    short_side = min(height, width)
    for k in range(int(rng.integers(1, max_instances + 1))):
        category = int(rng.integers(CIRCLE, TRIANGLE + 1))
        size = rng.uniform(0.06, 0.30) * short_side
        if placed and rng.random() < 0.6:
            # Put most later things next to an earlier one so occlusion is the norm, not luck.
            px, py, psize = placed[int(rng.integers(len(placed)))]
            direction = rng.uniform(0.0, 2.0 * math.pi)
            distance = rng.uniform(0.3, 1.0) * (psize + size)
            cx, cy = px + distance * math.cos(direction), py + distance * math.sin(direction)
        else:
            cx, cy = rng.uniform(-0.05, 1.05) * width, rng.uniform(-0.05, 1.05) * height
        color = _thing_color(rng, category)
        (y0, y1, x0, x1), mask = _shape_mask(rng, category, cx, cy, size, yy, xx)
        placed.append((cx, cy, size))
        categories.append(category)
        full_areas.append(int(np.count_nonzero(mask)))
        if full_areas[-1] == 0:
            continue
        owner[y0:y1, x0:x1][mask] = k
        patch = image[y0:y1, x0:x1]
        patch[mask] = color
        patch[_outline(mask)] = color * 0.6

    # Flat-looking fills get little grain, the ground the most: texture is part of the signal.
    sigma = np.where(owner >= 0, np.float32(4.0), np.asarray((3.0, 9.0, 4.0), np.float32)[stuff])
    image += rng.standard_normal((height, width, 3), dtype=np.float32) * sigma[..., None]
    image_u8 = np.clip(image, 0.0, 255.0).astype(np.uint8)

    visible = np.bincount(owner.ravel() + 1, minlength=len(categories) + 1)[1:]
    min_area = max(16, math.ceil(0.0015 * height * width))
    labels = np.full(len(categories), IGNORE_INDEX, np.uint8)
    instances: list[Instance] = []
    for k, category in enumerate(categories):
        if visible[k] >= min_area:
            labels[k] = category
            instances.append(Instance(category, owner == k, unoccluded_area=full_areas[k]))
    # owner == -1 indexes labels[-1], but np.where discards those entries.
    semantic = np.where(owner >= 0, labels[owner], stuff).astype(np.uint8)
    return image_u8, semantic, instances


def scene_images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``batch`` validation-split scene images, uint8 ``[N, H, W, 3]``, at any positive size.

    For timing and parity inputs: sizes under the generator's 32 px minimum are crops of a 32 px scene.
    """
    scenes = ShapesDataset(batch, max(height, 32), max(width, 32), seed=seed, split="val")
    return np.stack([scenes[i].image[:height, :width] for i in range(batch)])
