"""Native TensorRT backend: builds (or loads) an engine from the exported ONNX graph and runs it.

The engine is built once per graph, precision, optimization profile, GPU and TensorRT version and cached
on disk (``segbench.export.tensorrt``); the profile spans the sweep's input shapes, with the heaviest cell
as the shape TensorRT tunes for. ``infer`` copies the host arrays to the GPU, runs the engine on a
dedicated CUDA stream and copies the outputs back, so its time is what trtexec calls host latency; the
GPU compute time alone comes from CUDA events around the engine (``last_stages_ms["compute"]``).

Precision: TensorRT 10 gets the fp32 graph and lowers it with builder flags; TensorRT 11 has no such
flags, so the harness hands it a graph exported at the target precision (``graph_precision``, by
``segbench.export.tensorrt.graph_precision_for``).

Like :mod:`segbench.export.tensorrt`, this has not run against a real TensorRT installation here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from segbench.backends.base import BackendConfig, BackendError, GraphBackendConfig, Runner
from segbench.backends.spec import GRAPH, BackendSpec
from segbench.export.tensorrt import (
    TensorRTUnavailable,
    graph_precision_for,
    import_tensorrt,
    load_or_build_engine,
    profile_from_shapes,
)
from segbench.export.tensorrt_engine import TensorRTEngine

ENGINE_SUFFIX = ".engine"


class TensorRTConfig(GraphBackendConfig):
    name: Literal["tensorrt"] = "tensorrt"
    device: Literal["cuda"] = "cuda"
    # TensorRT runs on NVIDIA GPUs only; the "cpu" entry exists because the shared validator looks it up.
    supported_precisions: ClassVar[dict[str, tuple[str, ...]]] = {"cpu": (), "cuda": ("fp32", "fp16", "bf16")}
    # None: TensorRT's default (the device's memory); a limit can rule out the fastest tactics.
    workspace_mb: int | None = Field(default=None, ge=1)
    # None: TensorRT's default (3); higher searches longer for faster kernels.
    builder_optimization_level: int | None = Field(default=None, ge=0, le=5)
    # Replay a CUDA graph of the engine's launches (as trtexec 11 does by default); not with
    # data-dependent output shapes, where it stays off (``describe()`` says which).
    cuda_graph: bool = False

    @field_validator("device", mode="before")
    @classmethod
    def _cuda_only(cls, value: Any) -> Any:
        if value != "cuda":
            raise ValueError(f"tensorrt runs on NVIDIA GPUs only: device must be 'cuda', not {value!r}")
        return value


def unavailable_reason(config: TensorRTConfig) -> str | None:
    try:
        import_tensorrt()  # also refuses majors other than 10 and 11
    except TensorRTUnavailable as exc:
        return str(exc)
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


def graph_precision(config: BackendConfig, precision: str) -> str:
    """The graph the installed TensorRT wants for ``precision`` (:func:`graph_precision_for`).

    Without TensorRT the backend will not run anyway; the requested precision is returned as is.
    """
    try:
        trt = import_tensorrt()
    except TensorRTUnavailable:
        return precision
    return graph_precision_for(precision, trt)


class TensorRTRunner(Runner):
    device_stages = ("compute",)  # CUDA events around the engine
    config: TensorRTConfig

    def activate(self) -> None:
        trt = import_tensorrt()
        if self.graph_path is None:
            raise BackendError("tensorrt needs an exported ONNX file or a built .engine file")
        path = Path(self.graph_path)
        self._trt_version = str(trt.__version__)
        self._profile: dict[str, Any] | None = None
        self._build_s: float | None = None
        start = time.perf_counter()
        if path.suffix == ENGINE_SUFFIX:
            # A pre-built engine: TensorRT refuses it unless this GPU model and TensorRT version built it.
            self._engine_path, self._engine_built = path, False
        else:
            if not self.input_shapes:
                raise BackendError("tensorrt needs the input shapes to derive an optimization profile")
            profile = profile_from_shapes(self.model.input_names[0], self.input_shapes)
            artifact = load_or_build_engine(
                path,
                self.precision,
                profile,
                workspace_mb=self.config.workspace_mb,
                builder_optimization_level=self.config.builder_optimization_level,
            )
            self._engine_path, self._engine_built = artifact.path, artifact.built
            self._build_s = artifact.build_s if artifact.built else None
            self._profile = artifact.profile
        engine_bytes = self._engine_path.read_bytes()
        self._engine_mb = len(engine_bytes) / 2**20
        self._device = torch.device("cuda")
        self._stream = torch.cuda.Stream(self._device)
        self._engine = TensorRTEngine(
            trt,
            engine_bytes,
            self._device,
            record_compute_ms=True,
            use_cuda_graph=self.config.cuda_graph,
        )
        self._load_s = time.perf_counter() - start - (self._build_s or 0.0)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.cuda.stream(self._stream):
            inputs = {
                name: torch.from_numpy(np.ascontiguousarray(array)).to(self._device)
                for name, array in feeds.items()
            }
            try:
                outputs = self._engine.infer(inputs, stream=self._stream)
            except ValueError as exc:  # e.g. a shape outside the optimization profile
                raise BackendError(str(exc)) from exc
            # .cpu() waits for the stream, so the end event below has completed.
            result = {name: _to_host(tensor) for name, tensor in outputs.items()}
        compute = self._engine.last_compute_ms
        self.last_stages_ms = None if compute is None else {"compute": compute}
        return result

    def deactivate(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.close()
        self._engine = None
        self._stream = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        super().deactivate()

    def describe(self) -> dict[str, Any]:
        engine = self._engine
        return {
            "tensorrt": self._trt_version,
            "engine_path": str(self._engine_path),
            "engine_built": self._engine_built,
            "build_s": self._build_s,
            "load_s": self._load_s,
            "profile": self._profile,
            "device_name": torch.cuda.get_device_name(self._device),
            "cuda_graph": bool(engine is not None and engine.cuda_graph_active),
            "device_memory_mb": engine.device_memory_bytes / 2**20 if engine is not None else None,
            # The serialized engine's size: roughly its weights, which TensorRT keeps outside torch.
            "engine_mb": self._engine_mb,
        }

    def reset_peak_device_memory(self) -> None:
        torch.cuda.reset_peak_memory_stats(self._device)

    def peak_device_memory_mb(self) -> float | None:
        """torch's allocator peak (I/O buffers) plus the engine's activation memory.

        TensorRT allocates its per-context activation memory itself, outside torch's allocator, so it is
        added from ``device_memory_size_v2``. The engine's weights are also TensorRT's own and are not
        included (``describe()["engine_mb"]`` gives their approximate size).
        """
        engine_bytes = self._engine.device_memory_bytes if self._engine is not None else 0
        return (torch.cuda.max_memory_allocated(self._device) + engine_bytes) / 2**20


def _to_host(tensor: torch.Tensor) -> np.ndarray:
    """A host copy with the engine's dtype, except half/bfloat16 -> float32 (numpy has no bfloat16)."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.cpu().numpy()


SPEC = BackendSpec(
    name="tensorrt",
    config_class=TensorRTConfig,
    runner_class=TensorRTRunner,
    consumes=GRAPH,
    artifact_suffixes=(".onnx", ENGINE_SUFFIX),
    graph_precision=graph_precision,
    unavailable=unavailable_reason,
)
