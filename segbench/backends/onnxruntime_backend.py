"""ONNX Runtime backend: runs the exported graph with the CPU, CUDA or TensorRT execution provider.

Providers are requested only when this onnxruntime build really offers them, and after the session is
created ``get_providers()`` is checked: onnxruntime silently falls back to the CPU when a GPU provider's
libraries are missing, and a CPU number must never be reported as a GPU one.

Precision is the graph's: an fp16 entry runs the fp16 graph (``segbench.export.fp16``). On the CPU the
provider would run whole fp16 regions in fp32 from fp16 weights (its cast-insertion pass), hiding
activation rounding and overflow; so there the fp16 graph runs as its emulation, every fp16 tensor
rounded to fp16 after the node that produces it, as fp16 storage on a GPU does. fp16 numerics are thus
checked without a GPU; fp16 timings on the CPU say nothing about a GPU.

The TensorRT execution provider takes its engine and timing caches (under segbench's cache directory),
its optimization profile (from the cells the harness will run) and its workspace from the same YAML
entry. onnxruntime-gpu's TensorRT provider links TensorRT 10.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from segbench.backends.base import BackendError, GraphBackendConfig, Runner
from segbench.backends.spec import GRAPH, BackendSpec
from segbench.export.onnx import cpu_session

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
INSTALL_HINT = "pip install 'segbench[cpu]' (or 'segbench[gpu]' for onnxruntime-gpu)"


class OnnxRuntimeConfig(GraphBackendConfig):
    name: Literal["onnxruntime"] = "onnxruntime"
    # Precision lives in the ONNX graph: fp16 runs the fp16 graph.
    supported_precisions: ClassVar[dict[str, tuple[str, ...]]] = {
        "cpu": ("fp32", "fp16"),
        "cuda": ("fp32", "fp16"),
    }
    # On cuda: also put the TensorRT provider first (it falls back to CUDA per unsupported subgraph).
    tensorrt: bool = False
    # TensorRT provider: workspace limit; engine + timing caches under the segbench cache directory.
    trt_workspace_mb: int | None = Field(default=None, ge=1)
    trt_engine_cache: bool = True
    # Extra provider options passed through as given (they win over the derived ones), e.g.
    # cuda_options: {cudnn_conv_algo_search: EXHAUSTIVE}, tensorrt_options: {trt_dla_enable: true}
    cuda_options: dict[str, str | int | bool] = Field(default_factory=dict)
    tensorrt_options: dict[str, str | int | bool] = Field(default_factory=dict)
    # I/O binding: the input copied to the device explicitly, outputs left there and copied back
    # explicitly, so no hidden copy sits inside session.run and each copy is timed (h2d / compute / d2h).
    # None: on for cuda, off for cpu (where there is nothing to copy).
    io_binding: bool | None = None
    intra_op_num_threads: int | None = Field(default=None, ge=1)
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"


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


def _option_value(value: str | int | bool) -> str:
    # onnxruntime's provider options are strings; booleans are spelled "True"/"False" in its docs.
    return str(value)


def provider_options(
    config: OnnxRuntimeConfig,
    input_name: str,
    input_shapes: list[tuple[int, ...]],
    cache_dir: Path | None = None,
) -> list[dict[str, str]]:
    """Options for each provider of ``requested_providers(config)``, in the same order."""
    from segbench.export.cache import cache_root
    from segbench.export.tensorrt import profile_from_shapes

    options: list[dict[str, str]] = []
    for provider in requested_providers(config):
        if provider == TENSORRT_PROVIDER:
            derived: dict[str, Any] = {}
            if config.trt_engine_cache:
                directory = str((cache_dir or cache_root()) / "onnxruntime-tensorrt")
                derived |= {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": directory,
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": directory,
                }
            if input_shapes:
                # One profile over every cell: without it the provider rebuilds its engine per new shape.
                derived |= profile_from_shapes(input_name, input_shapes).to_ort_options()
            if config.trt_workspace_mb is not None:
                derived["trt_max_workspace_size"] = config.trt_workspace_mb << 20
            chosen = {**derived, **config.tensorrt_options}
        elif provider == CUDA_PROVIDER:
            chosen = dict(config.cuda_options)
        else:
            chosen = {}
        options.append({key: _option_value(value) for key, value in chosen.items()})
    return options


def unavailable_reason(config: OnnxRuntimeConfig) -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return f"onnxruntime is not installed ({INSTALL_HINT})"
    if len(_installed_distributions()) > 1:
        return "both onnxruntime and onnxruntime-gpu are installed; uninstall both and install one"
    available = ort.get_available_providers()
    missing = [p for p in requested_providers(config) if p not in available]
    if missing:
        return f"this onnxruntime build has no {', '.join(missing)} (install onnxruntime-gpu: segbench[gpu])"
    return None


class OnnxRuntimeRunner(Runner):
    device_stages = ("h2d", "compute", "d2h")  # with I/O binding only
    config: OnnxRuntimeConfig

    def activate(self) -> None:
        import onnxruntime as ort

        if self.graph_path is None:
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
        self.provider_options = provider_options(self.config, self.model.input_names[0], self.input_shapes)
        # On the CPU an fp16 graph runs as its emulation (every fp16 tensor rounded after its producer):
        # the CPU provider would compute whole fp16 regions in fp32 and hide activation overflow.
        self.emulated = self.config.device == "cpu" and self.precision != "fp32"
        if self.emulated:
            self.session = cpu_session(self.graph_path, emulate_low_precision=True, options=options)
        else:
            self.session = ort.InferenceSession(
                str(self.graph_path), options, providers=requested, provider_options=self.provider_options
            )
        self.active_providers = self.session.get_providers()
        if requested[0] not in self.active_providers:
            raise BackendError(
                f"onnxruntime did not enable {requested[0]} (active: {', '.join(self.active_providers)}); "
                "its libraries are probably missing"
            )
        self._output_names = [o.name for o in self.session.get_outputs()]
        binding = self.config.io_binding
        self.io_binding = (self.config.device == "cuda") if binding is None else binding
        self._ort_device = "cuda" if self.active_providers[0] != CPU_PROVIDER else "cpu"

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.io_binding:
            outputs = self.session.run(self._output_names, feeds)
            return dict(zip(self._output_names, outputs, strict=True))
        import onnxruntime as ort

        clock = time.perf_counter_ns
        t0 = clock()
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, self._ort_device, 0))
        for name in self._output_names:
            binding.bind_output(name, self._ort_device)
        t1 = clock()
        self.session.run_with_iobinding(binding)  # returns when the device work is done
        t2 = clock()
        outputs = binding.copy_outputs_to_cpu()
        t3 = clock()
        self.last_stages_ms = {"h2d": (t1 - t0) / 1e6, "compute": (t2 - t1) / 1e6, "d2h": (t3 - t2) / 1e6}
        return dict(zip(self._output_names, outputs, strict=True))

    def deactivate(self) -> None:
        self.session = None
        super().deactivate()

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        info = {
            "onnxruntime": ort.__version__,
            "provider": self.active_providers[0],
            "io_binding": self.io_binding,
        }
        if self.emulated:
            info["fp16_emulated"] = True
        chosen = dict(zip(requested_providers(self.config), self.provider_options, strict=True))
        if chosen.get(self.active_providers[0]):
            info["provider_options"] = chosen[self.active_providers[0]]
        return info


SPEC = BackendSpec(name="onnxruntime", config_class=OnnxRuntimeConfig, runner_class=OnnxRuntimeRunner,
                   consumes=GRAPH, unavailable=unavailable_reason)  # fmt: skip
