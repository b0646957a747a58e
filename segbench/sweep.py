"""Input sizes x batch sizes: the sweep a model runs through on a backend."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def parse_size(value: Any) -> tuple[int, int]:
    """``512``, ``"512"``, ``"512x1024"`` or ``[512, 1024]`` -> ``(height, width)``, both positive."""
    if isinstance(value, bool):
        raise ValueError(f"invalid input size {value!r}")
    if isinstance(value, int):
        height = width = value
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*(x\s*-?\d+\s*)?", value):
        parts = [int(p) for p in value.lower().split("x")]
        height, width = (parts[0], parts[0]) if len(parts) == 1 else parts
    elif isinstance(value, list | tuple) and len(value) == 2 and all(type(v) is int for v in value):
        height, width = value
    else:
        raise ValueError(f"invalid input size {value!r}: use HxW, e.g. 512x512")
    if height <= 0 or width <= 0:
        raise ValueError(f"input size must be positive, got {height}x{width}")
    return height, width


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_sizes: list[tuple[int, int]] = Field(
        default_factory=lambda: [(256, 256)],
        min_length=1,
        description="The input sizes to time, each `HxW` (read by `parse_size`); every size is timed at "
        "every batch size.",
    )
    batch_sizes: list[int] = Field(
        default_factory=lambda: [1],
        min_length=1,
        description="The batch sizes to time at each input size, in images; each positive.",
    )
    # After the cells of each size: search the largest batch that runs (doubling past the largest batch
    # size, then bisecting), up to max_batch_limit; written to capacity.jsonl.
    find_max_batch: bool = False
    max_batch_limit: int = Field(
        default=64,
        ge=1,
        description="The largest batch the `find_max_batch` search tries, in images (a lower limit of the "
        "backend's own, e.g. an engine profile's, wins).",
    )

    @field_validator("input_sizes", mode="before")
    @classmethod
    def _parse_sizes(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("input_sizes must be a list of HxW sizes")
        return [parse_size(v) for v in value]

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, value: list[int]) -> list[int]:
        bad = [b for b in value if b <= 0]
        if bad:
            raise ValueError(f"batch sizes must be positive, got {bad[0]}")
        return value


@dataclass(frozen=True)
class Cell:
    """One timing cell's input: ``batch`` images of ``height`` x ``width``."""

    height: int
    width: int
    batch: int

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def __str__(self) -> str:
        return f"{self.height}x{self.width} b{self.batch}"
