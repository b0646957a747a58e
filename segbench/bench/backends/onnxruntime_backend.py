"""ONNX Runtime backend: runs the exported graph with the CPU, CUDA or TensorRT execution provider.

Providers are requested only when this onnxruntime build really offers them, and after the session is
created ``get_providers()`` is checked: onnxruntime silently falls back to the CPU when a GPU provider's
libraries are missing, and a CPU number must never be reported as a GPU one.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from segbench.bench.backends.base import BackendConfig, BackendError, Runner

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
INSTALL_HINT = "pip install 'segbench[cpu]' (or 'segbench[gpu]' for onnxruntime-gpu)"


class OnnxRuntimeConfig(BackendConfig):
    name: Literal["onnxruntime"] = "onnxruntime"
    # Precision lives in the ONNX graph; fp16 graphs come with the export work, fp32 for now.
    supported_precisions: ClassVar[dict[str, tuple[str, ...]]] = {"cpu": ("fp32",), "cuda": ("fp32",)}
    # On cuda: also put the TensorRT provider first (it falls back to CUDA per unsupported subgraph).
    tensorrt: bool = False
    intra_op_num_threads: int | None = Field(default=None, ge=1)
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    opset: int = Field(default=18, ge=13)
    # None: the exporter the model prefers (dynamo, or torchscript for detectors with NMS).
    exporter: Literal["dynamo", "torchscript"] | None = None


def _installed_distributions() -> list[str]:
    found = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(dist)
            found.append(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def requested_providers(config: OnnxRuntimeConfig) -> list[str]:
    """Providers to ask for, most preferred first."""
    if config.device == "cpu":
        return [CPU_PROVIDER]
    wanted = [TENSORRT_PROVIDER] if config.tensorrt else []
    return [*wanted, CUDA_PROVIDER, CPU_PROVIDER]


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    config_class = OnnxRuntimeConfig
    artifact = "onnx"
    config: OnnxRuntimeConfig

    @classmethod
    def unavailable_reason(cls, config: OnnxRuntimeConfig) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError:
            return f"onnxruntime is not installed ({INSTALL_HINT})"
        if len(_installed_distributions()) > 1:
            return "both onnxruntime and onnxruntime-gpu are installed; uninstall both and install one"
        available = ort.get_available_providers()
        missing = [p for p in requested_providers(config) if p not in available]
        if missing:
            return (
                f"this onnxruntime build has no {', '.join(missing)} (install onnxruntime-gpu: segbench[gpu])"
            )
        return None

    def activate(self) -> None:
        import onnxruntime as ort

        if self.artifact_path is None:
            raise BackendError("onnxruntime needs an exported ONNX file")
        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.config.graph_optimization_level]
        if self.config.intra_op_num_threads is not None:
            options.intra_op_num_threads = self.config.intra_op_num_threads
        options.log_severity_level = 3  # errors only: provider fallbacks are checked below, not logged
        requested = requested_providers(self.config)
        self.session = ort.InferenceSession(str(self.artifact_path), options, providers=requested)
        self.active_providers = self.session.get_providers()
        if requested[0] not in self.active_providers:
            raise BackendError(
                f"onnxruntime did not enable {requested[0]} (active: {', '.join(self.active_providers)}); "
                "its libraries are probably missing"
            )
        self._output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self._output_names, feeds)
        return dict(zip(self._output_names, outputs, strict=True))

    def deactivate(self) -> None:
        self.session = None
        super().deactivate()

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "provider": self.active_providers[0]}
