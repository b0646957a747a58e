"""The optimization profile: the min / opt / max input shapes an engine accepts, derived from the sweep.

segbench's own type, not Polygraphy's ``Profile`` (:func:`segbench.backends.tensorrt.build.polygraphy_profile`
converts it): onnxruntime's TensorRT provider and ``segbench export`` use it too, without Polygraphy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Shape = tuple[int, int, int, int]


def _shape4(value: Sequence[int], what: str) -> Shape:
    shape = tuple(int(d) for d in value)
    if len(shape) != 4 or any(d < 1 for d in shape):
        raise ValueError(f"{what} must be 4 positive ints (NCHW), got {tuple(value)}")
    return shape


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


@dataclass(frozen=True)
class OptimizationProfile:
    """The min / opt / max NCHW shapes one engine accepts for its (single) image input."""

    input_name: str
    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for field_name in ("min", "opt", "max"):
            object.__setattr__(self, field_name, _shape4(getattr(self, field_name), field_name))
        if not all(lo <= o <= hi for lo, o, hi in zip(self.min, self.opt, self.max, strict=True)):
            raise ValueError(
                f"profile needs min <= opt <= max per dim, got {self.min}, {self.opt}, {self.max}"
            )

    def to_ort_options(self) -> dict[str, str]:
        """The same profile as onnxruntime TensorRT execution-provider options (``name:NxCxHxW``)."""
        return {
            f"trt_profile_{which}_shapes": f"{self.input_name}:{_shape_text(getattr(self, which))}"
            for which in ("min", "opt", "max")
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_name": self.input_name,
            "min": list(self.min),
            "opt": list(self.opt),
            "max": list(self.max),
        }


def profile_from_shapes(input_name: str, shapes: Sequence[Sequence[int]]) -> OptimizationProfile:
    """The profile spanning every sweep shape: elementwise min and max, and as ``opt`` the heaviest shape.

    TensorRT tunes kernels for ``opt``; the largest cell costs the most time, so that is where tuning pays
    most (on equal element counts the later shape wins, so the choice is deterministic).
    """
    cells = [_shape4(shape, "sweep shape") for shape in shapes]
    if not cells:
        raise ValueError("no input shapes to derive an optimization profile from")
    lowest = tuple(min(dims) for dims in zip(*cells, strict=True))
    highest = tuple(max(dims) for dims in zip(*cells, strict=True))
    heaviest = cells[0]
    for cell in cells[1:]:
        if math.prod(cell) >= math.prod(heaviest):
            heaviest = cell
    return OptimizationProfile(input_name, lowest, heaviest, highest)
