"""The ``tensorrt`` backend's YAML entry."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from segbench.backends.base import GraphBackendConfig


class TensorRTConfig(GraphBackendConfig):
    name: Literal["tensorrt"] = Field(
        default="tensorrt", description="`tensorrt`: a TensorRT engine of the exported ONNX graph runs."
    )
    device: Literal["cuda"] = Field(default="cuda", description="`cuda` only: TensorRT runs on NVIDIA GPUs.")
    # TensorRT runs on NVIDIA GPUs only; the "cpu" entry exists because the shared validator looks it up.
    supported_precisions: ClassVar[dict[str, tuple[str, ...]]] = {"cpu": (), "cuda": ("fp32", "fp16", "bf16")}
    # None: TensorRT's default (the device's memory); a limit can rule out the fastest tactics.
    workspace_mb: int | None = Field(default=None, ge=1)
    # None: TensorRT's default (3); higher searches longer for faster kernels.
    builder_optimization_level: int | None = Field(default=None, ge=0, le=5)
    # Replay a CUDA graph of the engine's launches (as trtexec 11 does by default); not with
    # data-dependent output shapes, where it stays off (``describe()`` says which).
    cuda_graph: bool = False
    # TF32 for fp32 layers. TensorRT enables it by default, which makes an "fp32" engine compute in
    # TF32; segbench clears it unless asked for (and keys the engine cache on it), as torch's tf32 does.
    tf32: bool = False

    @field_validator("device", mode="before")
    @classmethod
    def _cuda_only(cls, value: Any) -> Any:
        if value != "cuda":
            raise ValueError(f"tensorrt runs on NVIDIA GPUs only: device must be 'cuda', not {value!r}")
        return value
