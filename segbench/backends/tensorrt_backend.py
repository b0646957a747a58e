"""Native TensorRT backend: builds (or loads) an engine from the exported ONNX graph and runs it.

The engine is built once per graph, precision, optimization profile, GPU and TensorRT version and cached
on disk (``segbench.export.tensorrt``); the profile spans the sweep's input shapes, with the heaviest cell
as the shape TensorRT tunes for. ``infer`` copies the host arrays to the GPU through page-locked staging
buffers (as the torch runner does, so every backend copies the same way), runs the engine on a dedicated
CUDA stream and copies the outputs back into page-locked buffers, so its time is what trtexec calls host
latency; the GPU compute time alone comes from CUDA events around the engine (``last_stages_ms["compute"]``).

Precision: the harness hands TensorRT a graph exported at the target precision (``graph_precision``, by
``segbench.export.tensorrt.graph_precision_for``), strongly typed on TensorRT 10 and 11; bf16 on 10 is
lowered from the fp32 graph by the BF16 flag, and bf16 on 11 is refused (it needs a bf16 graph, which
segbench does not write). A graph named with ``artifact:`` must carry the precision it is run at.

Like :mod:`segbench.export.tensorrt`, this has not run against a real TensorRT installation here.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from segbench.backends.base import BackendConfig, BackendError, GraphBackendConfig, Runner
from segbench.backends.spec import GRAPH, BackendSpec
from segbench.export.artifacts import GRAPH_PRECISIONS
from segbench.export.tensorrt import (
    TensorRTUnavailable,
    graph_precision_for,
    import_tensorrt,
    load_or_build_engine,
    profile_from_shapes,
    tensorrt_version,
)
from segbench.export.tensorrt_engine import TensorRTEngine, engine_sidecar_precision
from segbench.models import onnx_graph

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
    # TF32 for fp32 layers. TensorRT enables it by default, which makes an "fp32" engine compute in
    # TF32; segbench clears it unless asked for (and keys the engine cache on it), as torch's tf32 does.
    tf32: bool = False

    @field_validator("device", mode="before")
    @classmethod
    def _cuda_only(cls, value: Any) -> Any:
        if value != "cuda":
            raise ValueError(f"tensorrt runs on NVIDIA GPUs only: device must be 'cuda', not {value!r}")
        return value


def unavailable_reason(config: BackendConfig) -> str | None:
    try:
        import_tensorrt()  # also refuses majors other than 10 and 11
    except TensorRTUnavailable as exc:
        return str(exc)
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


def graph_precision(config: BackendConfig, precision: str) -> str:
    """The graph segbench exports for ``precision`` on the installed TensorRT (:func:`graph_precision_for`).

    A graph segbench cannot write (bf16 on TensorRT 11) is refused here, before any export or build, in
    one line for every cell of that precision; a bf16 graph named with ``artifact:`` does not come here.
    Without TensorRT the backend will not run anyway; the requested precision is returned as is.
    """
    try:
        trt = import_tensorrt()
    except TensorRTUnavailable:
        return precision
    needed = graph_precision_for(precision, trt)
    if needed not in GRAPH_PRECISIONS:
        raise BackendError(
            f"tensorrt {precision} on TensorRT {trt.__version__} needs a {needed} ONNX graph, which "
            f"segbench does not write: run it at {' or '.join(GRAPH_PRECISIONS)}, or give a {needed} graph "
            "with artifact:"
        )
    return needed


def check_graph_precision(path: Path, precision: str, trt: ModuleType) -> None:
    """Refuse a graph whose float precision is not what an engine at ``precision`` is built from: the
    strongly typed build would keep the graph's types and label them ``precision`` (an fp32 graph run as
    fp16 would be an fp32 engine). The graph at the engine's precision itself is accepted too."""
    found = onnx_graph.graph_precision(onnx_graph.load_graph(path))
    needed = graph_precision_for(precision, trt)
    major, _ = tensorrt_version(trt)
    if found not in (needed, precision):
        raise BackendError(
            f"{path.name} computes in {found}, but a TensorRT {major} {precision} engine is "
            f"built from a graph in {needed}: export it at {needed}, or run it at precision {found}"
        )


def check_engine_precision(path: Path, precision: str) -> str:
    """Refuse a ``.engine`` artifact whose segbench sidecar says it was built at another precision; return
    how its precision was checked (for the row): against the sidecar, or, without one, only by its I/O
    types (:func:`check_engine_io`, after it is loaded)."""
    found = engine_sidecar_precision(path)
    if found is None:
        return "engine I/O types only (no segbench sidecar beside it)"
    built, sidecar = found
    if built != precision:
        raise BackendError(
            f"{path.name} was built at {built} ({sidecar.name} says so): run it at precision {built}"
        )
    return f"sidecar {sidecar.name}"


# Float I/O types that an engine built at a precision cannot have: a half-precision input or output
# means the engine was built for that precision, whatever the run is labelled.
_FOREIGN_IO = {"fp32": {torch.float16, torch.bfloat16}, "fp16": {torch.bfloat16}, "bf16": {torch.float16}}


def check_engine_io(engine: TensorRTEngine, path: Path, precision: str) -> None:
    foreign = sorted(
        f"{name} ({dtype})".replace("torch.", "")
        for name, dtype in engine.io_dtypes.items()
        if dtype in _FOREIGN_IO.get(precision, set())
    )
    if foreign:
        raise BackendError(f"{path.name} has {', '.join(foreign)} I/O: it was not built at {precision}")


class HostStaging:
    """Page-locked host buffers for a device runner's copies, one per (name, shape, dtype), reused.

    Copies from pageable memory go through a driver bounce buffer and cannot overlap; the torch runner
    stages through pinned memory, so the TensorRT runner does too and their copy times compare. With
    ``pinned=False`` (tests on the CPU) the buffers are ordinary host tensors.
    """

    def __init__(self, pinned: bool) -> None:
        self.pinned = pinned
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}

    def buffer(self, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        found = self._buffers.get((key, shape, dtype))
        if found is None:
            found = self._buffers[(key, shape, dtype)] = torch.empty(
                shape, dtype=dtype, pin_memory=self.pinned
            )
        return found

    def to_device(self, feeds: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
        """Each array copied into its staging buffer, then queued to ``device`` on the current stream."""
        moved = {}
        for name, array in feeds.items():
            host = torch.from_numpy(np.ascontiguousarray(array))
            staging = self.buffer(f"in:{name}", tuple(host.shape), host.dtype).copy_(host)
            moved[name] = staging.to(device, non_blocking=self.pinned)
        return moved

    def to_host(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs queued into their host buffers (half and bfloat16 as float32: numpy has no bfloat16);
        synchronise the stream before reading them."""
        host = {}
        for name, tensor in outputs.items():
            if tensor.dtype in (torch.float16, torch.bfloat16):
                tensor = tensor.float()
            buffer = self.buffer(f"out:{name}", tuple(tensor.shape), tensor.dtype)
            host[name] = buffer.copy_(tensor, non_blocking=self.pinned)
        return host

    def clear(self) -> None:
        self._buffers.clear()


class TensorRTRunner(Runner):
    device_stages = ("compute",)  # CUDA events around the engine
    config: TensorRTConfig
    _engine: TensorRTEngine | None = None

    def activate(self) -> None:
        trt = import_tensorrt()
        if self.graph_path is None:
            raise BackendError("tensorrt needs an exported ONNX file or a built .engine file")
        path = Path(self.graph_path)
        self._trt_version = str(trt.__version__)
        self._profile: dict[str, Any] | None = None
        self._build_s: float | None = None
        start = time.perf_counter()
        self._precision_check = "built here from the graph"
        if path.suffix == ENGINE_SUFFIX:
            # A pre-built engine: TensorRT refuses it unless this GPU model and TensorRT version built it.
            self._engine_path, self._engine_built = path, False
            self._precision_check = check_engine_precision(path, self.precision)
        else:
            if not self.input_shapes:
                raise BackendError("tensorrt needs the input shapes to derive an optimization profile")
            if self.config.artifact is not None:  # segbench's own exports follow graph_precision
                check_graph_precision(path, self.precision, trt)
            profile = profile_from_shapes(self.model.input_names[0], self.input_shapes)
            artifact = load_or_build_engine(
                path,
                self.precision,
                profile,
                workspace_mb=self.config.workspace_mb,
                builder_optimization_level=self.config.builder_optimization_level,
                tf32=self.config.tf32,
            )
            self._engine_path, self._engine_built = artifact.path, artifact.built
            self._build_s = artifact.build_s if artifact.built else None
            self._profile = artifact.profile
        engine_bytes = self._engine_path.read_bytes()
        self._engine_mb = len(engine_bytes) / 2**20
        self._device = torch.device("cuda")
        self._stream: torch.cuda.Stream | None = torch.cuda.Stream(self._device)
        self._staging = HostStaging(pinned=True)
        self._engine = TensorRTEngine(
            trt,
            engine_bytes,
            self._device,
            record_compute_ms=True,
            use_cuda_graph=self.config.cuda_graph,
        )
        if self._engine_path == path:
            check_engine_io(self._engine, path, self.precision)
        self._load_s = time.perf_counter() - start - (self._build_s or 0.0)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        engine, stream = self._engine, self._stream
        assert engine is not None and stream is not None, "tensorrt: infer on an inactive runner"
        with torch.cuda.stream(stream):
            inputs = self._staging.to_device(feeds, self._device)
            try:
                outputs = engine.infer(inputs, stream=stream)
            except ValueError as exc:  # e.g. a shape outside the optimization profile
                raise BackendError(str(exc)) from exc
            host = self._staging.to_host(outputs)
        # The copies are asynchronous: wait for them (and so for the end event) before reading.
        stream.synchronize()
        compute = engine.last_compute_ms
        self.last_stages_ms = None if compute is None else {"compute": compute}
        # The staging buffers are reused by the next call: hand out copies.
        return {name: tensor.numpy().copy() for name, tensor in host.items()}

    def batch_limit(self) -> tuple[int, str] | None:
        """The engine's largest batch: its optimization profile's max (or its static batch)."""
        if self._engine is None:
            return None
        name = self.model.input_names[0]
        batch = self._engine.profile_max_shape(name)[0]
        static = int(self._engine.engine.get_tensor_shape(name)[0]) >= 0
        reason = (
            f"the engine takes a static batch of {batch}"
            if static
            else (f"the engine's optimization profile ends at batch {batch}")
        )
        return batch, reason

    def release_cached_shapes(self) -> None:
        """Drop the captured CUDA graph and the staging buffers (the largest-batch search calls it)."""
        if self._engine is not None:
            self._engine.release_graph()
        staging = getattr(self, "_staging", None)
        if staging is not None:
            staging.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def deactivate(self) -> None:
        engine = self._engine
        if engine is not None:
            engine.close()
        self._engine = None
        self._stream = None
        staging = getattr(self, "_staging", None)
        if staging is not None:
            staging.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        super().deactivate()

    def describe(self) -> dict[str, Any]:
        engine = self._engine
        graph: bool | str = bool(engine is not None and engine.cuda_graph_active)
        info: dict[str, Any] = {}
        if engine is not None and engine.cuda_graph_fallback is not None:
            graph = "fallback"
            info["cuda_graph_fallback"] = engine.cuda_graph_fallback
        return {
            "tensorrt": self._trt_version,
            "engine_path": str(self._engine_path),
            "engine_built": self._engine_built,
            "build_s": self._build_s,
            "load_s": self._load_s,
            "profile": self._profile,
            "device_name": torch.cuda.get_device_name(self._device),
            "tf32": self.config.tf32,
            "precision_check": self._precision_check,
            "pinned_memory": True,
            "cuda_graph": graph,
            **info,
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


SPEC = BackendSpec(
    name="tensorrt",
    config_class=TensorRTConfig,
    runner_class=TensorRTRunner,
    consumes=GRAPH,
    artifact_suffixes=(".onnx", ENGINE_SUFFIX),
    graph_precision=graph_precision,
    unavailable=unavailable_reason,
)
