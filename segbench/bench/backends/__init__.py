"""Backend registry: adding a backend is one new file here plus one entry in ``RUNNERS``."""

from segbench.bench.backends.base import BackendConfig, BackendError, Runner
from segbench.bench.backends.onnxruntime_backend import OnnxRuntimeRunner
from segbench.bench.backends.tensorrt_backend import TensorRTRunner
from segbench.bench.backends.torch_backend import TorchRunner

RUNNERS: dict[str, type[Runner]] = {
    runner.name: runner for runner in (TorchRunner, OnnxRuntimeRunner, TensorRTRunner)
}

__all__ = ["RUNNERS", "BackendConfig", "BackendError", "Runner"]
