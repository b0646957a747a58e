"""The native TensorRT runner: builds (or loads) an engine from the exported ONNX graph and runs it.

The engine comes from the engine cache (:mod:`.engine_cache`, built through :mod:`.build`), or is a
``.engine`` file named with ``artifact:``; the profile spans the sweep's input shapes, with the heaviest
cell as the shape TensorRT tunes for. ``infer`` copies the host arrays to the GPU through page-locked
staging buffers (as the torch runner does, so every backend copies the same way), runs the engine on a
dedicated CUDA stream and copies the outputs back into page-locked buffers, so its time is what trtexec
calls host latency; the GPU compute time alone comes from CUDA events around the engine
(``last_stages_ms["compute"]``). A graph or engine named with ``artifact:`` must be at the precision it is
run at (:mod:`.precision`).

Like the rest of the package, this has not run against a real TensorRT installation here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segbench.backends.base import BackendConfig, BackendError, Runner
from segbench.backends.tensorrt.build import trt_logger
from segbench.backends.tensorrt.config import TensorRTConfig
from segbench.backends.tensorrt.engine import TensorRTEngine
from segbench.backends.tensorrt.engine_cache import load_or_build_engine
from segbench.backends.tensorrt.install import TensorRTUnavailable, import_tensorrt
from segbench.backends.tensorrt.precision import (
    check_engine_io,
    check_engine_precision,
    check_graph_precision,
)
from segbench.backends.tensorrt.profile import profile_from_shapes
from segbench.backends.tensorrt.staging import HostStaging

ENGINE_SUFFIX = ".engine"


def unavailable_reason(config: BackendConfig) -> str | None:
    try:
        import_tensorrt()  # also refuses majors other than 10 and 11
    except TensorRTUnavailable as exc:
        return str(exc)
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


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
            trt_logger(),
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
