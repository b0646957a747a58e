"""What every backend provides: a typed config and a runner with activate / infer / deactivate.

A runner executes a model's ``forward`` only. Pre- and postprocessing belong to the model and are run
by the harness around ``infer`` for every backend alike, so end-to-end numbers compare across backends.
Runners take and return numpy arrays on the host, so a device backend's ``infer`` includes its copies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from segbench.models.base import SegmentationModel
from segbench.sweep import SweepConfig

Precision = Literal["fp32", "fp16", "bf16"]
Device = Literal["cpu", "cuda"]


class BackendConfig(BaseModel):
    """Settings shared by every backend; each backend subclasses this with a literal ``name``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The backend this entry runs; its name selects the entry's options.")
    device: Device = Field(
        default="cpu",
        description="Where it runs: `cpu` or `cuda`. An entry whose device is missing here is skipped with "
        "the reason.",
    )
    precisions: list[Precision] = Field(
        default=["fp32"],
        description="The precisions to run it at, each a unit of its own; each must be one the backend "
        "supports on that device, and a repeated one counts once.",
    )
    # Overrides the model's and the top-level sweep for this backend (e.g. larger batches on a GPU).
    sweep: SweepConfig | None = None
    # A pre-exported file (ONNX graph or engine) to benchmark and check instead of exporting the model.
    artifact: Path | None = None
    # Run this entry for one model of the config only (required with ``artifact`` when there are several).
    model: str | None = None
    # Run an ``artifact`` whose inputs/outputs or parity do not match its model (warned and recorded).
    allow_mismatch: bool = False

    # Precisions each device supports for this backend; subclasses narrow it.
    supported_precisions: ClassVar[dict[str, tuple[str, ...]]] = {"cpu": ("fp32",), "cuda": ("fp32",)}

    @field_validator("precisions")
    @classmethod
    def _non_empty_unique(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one precision is required")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _precisions_supported_on_device(self) -> BackendConfig:
        allowed = self.supported_precisions[self.device]
        bad = [p for p in self.precisions if p not in allowed]
        if bad:
            raise ValueError(
                f"{self.name} on {self.device} does not support precision {', '.join(bad)} "
                f"(supported: {', '.join(allowed)})"
            )
        return self

    @field_validator("artifact")
    @classmethod
    def _artifact_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"artifact file not found: {value}")
        return value

    def variant(self) -> dict[str, Any]:
        """Backend-specific options that differ from their defaults, e.g. ``{"channels_last": True}``.

        Results carry it so that two entries of one backend stay distinguishable; a pre-exported
        ``artifact`` is part of it.
        """
        shared = set(BackendConfig.model_fields) - {"artifact"}
        fields = type(self).model_fields
        return {
            key: value
            for key, value in self.model_dump(mode="json").items()
            if key not in shared and value != fields[key].get_default(call_default_factory=True)
        }


class GraphBackendConfig(BackendConfig):
    """A backend that runs an ONNX graph: how segbench exports the graph it is handed."""

    opset: int = Field(default=18, ge=13, description="The ONNX opset the model's graph is exported with.")
    # None: the exporter the model prefers (dynamo, or torchscript for detectors with NMS).
    exporter: Literal["dynamo", "torchscript"] | None = None


class BackendError(RuntimeError):
    """A backend could not run a cell (session creation, provider fallback, unsupported input)."""


class Runner(ABC):
    """Runs one model's forward on one backend at one precision."""

    # The device stages a runner reports for its last ``infer`` (``last_stages_ms``): host-to-device
    # copy, compute and device-to-host copy, each None when it did not measure them.
    device_stages: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: SegmentationModel,
        config: BackendConfig,
        precision: str,
        graph_path: Path | None = None,
        input_shapes: Sequence[tuple[int, int, int, int]] = (),
    ) -> None:
        self.model = model
        self.config = config
        self.precision = precision
        # The ONNX graph or engine file this runner executes (backends that consume one).
        self.graph_path = graph_path
        # The NCHW input shapes the harness will feed (batch x size cells): engines derive their
        # optimization profiles from them.
        self.input_shapes = [tuple(shape) for shape in input_shapes]
        # Milliseconds per device stage of the last ``infer`` (keys from ``device_stages``), or None.
        self.last_stages_ms: dict[str, float] | None = None

    @abstractmethod
    def activate(self) -> None:
        """Load weights / create the session on the device. Cold-start cost lives here."""

    @abstractmethod
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run forward on host arrays, returning host arrays keyed by output name."""

    def deactivate(self) -> None:
        """Release the session / device memory."""
        return None

    def describe(self) -> dict[str, Any]:
        """Facts about what really ran (e.g. the execution provider), recorded with each result."""
        return {}

    def reset_peak_device_memory(self) -> None:
        """Start a new device-memory peak window (no-op for host backends)."""
        return None

    def peak_device_memory_mb(self) -> float | None:
        """Peak device memory since the last reset, in MiB; None for host backends."""
        return None

    def release_cached_shapes(self) -> None:
        """Free what the runner keeps per input shape (captured CUDA graphs, staging buffers).

        The largest-batch search calls it between tries, so the memory one batch's graph holds is not
        counted against the next one. No-op for runners that keep nothing per shape.
        """
        return None

    def batch_limit(self) -> tuple[int, str] | None:
        """The largest batch this runner can take and why (e.g. an engine's optimization profile), or
        None when only the device's memory limits it. The largest-batch search stops there."""
        return None

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.deactivate()
