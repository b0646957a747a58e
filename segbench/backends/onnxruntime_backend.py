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
entry; engines are cached per graph digest. onnxruntime-gpu's TensorRT provider links TensorRT 10; an fp16
graph gets ``trt_fp16_enable`` before onnxruntime 1.22 only (see ``tensorrt_precision_flag``). The
provider cannot turn TF32 off: its fp32 cells say ``tf32: true`` in their backend info, and their
``peak_fraction`` is judged against the TF32 peak.

On cuda, TF32 is off in the CUDA provider (``use_tf32``, on by onnxruntime's default) unless ``tf32``;
with I/O binding the input is staged in pinned memory and its copy, the run and the copy back are timed
on the host (``h2d``, ``run_host``, ``d2h``): onnxruntime exposes no CUDA events.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from segbench.backends.base import BackendConfig, BackendError, GraphBackendConfig, Runner
from segbench.backends.spec import GRAPH, BackendSpec
from segbench.export.onnx import cpu_session

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
INSTALL_HINT = "pip install 'segbench[cpu]' (or 'segbench[gpu]' for onnxruntime-gpu)"


class OnnxRuntimeConfig(GraphBackendConfig):
    name: Literal["onnxruntime"] = Field(
        default="onnxruntime", description="`onnxruntime`: the exported ONNX graph runs in onnxruntime."
    )
    # Precision lives in the ONNX graph: fp16 runs the fp16 graph.
    supported_precisions: ClassVar[dict[str, tuple[str, ...]]] = {
        "cpu": ("fp32", "fp16"),
        "cuda": ("fp32", "fp16"),
    }
    # On cuda: also put the TensorRT provider first (it falls back to CUDA per unsupported subgraph).
    tensorrt: bool = False
    # TensorRT provider: workspace limit; engine + timing caches under the segbench cache directory.
    trt_workspace_mb: int | None = Field(default=None, ge=1)
    trt_engine_cache: bool = Field(
        default=True, description="TensorRT provider: keep its engines and timing caches for later sessions."
    )
    # Extra provider options passed through as given (they win over the derived ones), e.g.
    # cuda_options: {cudnn_conv_algo_search: EXHAUSTIVE}, tensorrt_options: {trt_dla_enable: true}
    cuda_options: dict[str, str | int | bool] = Field(default_factory=dict)
    tensorrt_options: dict[str, str | int | bool] = Field(
        default_factory=dict, description="Extra TensorRT provider options, passed through like cuda_options."
    )
    # I/O binding: the input copied to the device explicitly, outputs left there and copied back
    # explicitly, so no hidden copy sits inside session.run and each copy is timed (h2d / compute / d2h).
    # None: on for cuda, off for cpu (where there is nothing to copy).
    io_binding: bool | None = None
    # With I/O binding on cuda: stage the input in a page-locked host buffer first, so its copy to the
    # device is a DMA from pinned memory, as torch's (None: on with I/O binding on cuda).
    pinned_memory: bool | None = None
    # TF32 tensor-core math in the CUDA provider (its use_tf32 option, which onnxruntime turns on by
    # default). Off, as for torch: fp32 graphs then compute in fp32, and so do an fp16 graph's fp32
    # keep-list nodes. A use_tf32 in cuda_options still wins. TensorRT's provider has no TF32 switch.
    tf32: bool = False
    intra_op_num_threads: int | None = Field(
        default=None, ge=1, description="Threads of the session's intra-op pool; None: onnxruntime's default."
    )
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = Field(
        default="all", description="The session's graph optimisations: none, basic, extended or all of them."
    )

    @model_validator(mode="after")
    def _cuda_only_options(self) -> OnnxRuntimeConfig:
        if self.device != "cuda" and (self.pinned_memory or self.tf32):
            raise ValueError("pinned_memory and tf32 need device: cuda")
        if self.pinned_memory and self.io_binding is False:
            raise ValueError("pinned_memory stages the I/O binding's input copy: it needs io_binding")
        return self


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


# The TensorRT provider's switch that lets TensorRT pick kernels of a precision (its network is weakly
# typed under TensorRT 10): without it an fp16 graph may run in fp32. onnxruntime has trt_bf16_enable too,
# but segbench writes no bf16 graphs, so onnxruntime entries take fp32 and fp16 only.
TENSORRT_PRECISION_FLAGS = {"fp16": "trt_fp16_enable", "bf16": "trt_bf16_enable"}


def _option_value(value: str | int | bool) -> str:
    # onnxruntime's provider options are strings; booleans are spelled "True"/"False" in its docs.
    return str(value)


# From this onnxruntime release on, the TensorRT provider builds a strongly typed network when its fp16
# and int8 flags are off (and a weakly typed one when either is on, where TensorRT may lower segbench's
# fp32 keep-list nodes to fp16). segbench's fp16 graph carries its own precisions, so on these versions
# the flag stays off.
STRONGLY_TYPED_FROM = (1, 22)


def onnxruntime_version() -> tuple[int, int]:
    import onnxruntime as ort

    parts = [int("".join(c for c in part if c.isdigit()) or 0) for part in ort.__version__.split(".")[:2]]
    return parts[0], parts[1]


def tensorrt_precision_flag(precision: str, version: tuple[int, int]) -> str | None:
    """The TensorRT provider's precision switch a graph of ``precision`` needs on onnxruntime
    ``version``: ``trt_fp16_enable`` for an fp16 graph before 1.22 (a weakly typed network would run it in
    fp32), none from 1.22 on (the graph's types are the network's) and none for fp32."""
    if precision not in TENSORRT_PRECISION_FLAGS or version >= STRONGLY_TYPED_FROM:
        return None
    return TENSORRT_PRECISION_FLAGS[precision]


# The op types onnxruntime's TensorRT provider leaves to the CUDA provider unless told otherwise (its
# trt_op_types_to_exclude default: ops whose output shapes depend on the data).
DEFAULT_EXCLUDED_OPS = ("NonMaxSuppression", "NonZero", "RoiAlign")


def partition_ops(graph_path: Path, config: OnnxRuntimeConfig) -> list[str]:
    """The op types that make the TensorRT provider split this graph into several TensorRT subgraphs:
    those it excludes (its default, or ``trt_op_types_to_exclude`` from the YAML) and those TensorRT's
    ONNX parser does not take. [] when TensorRT takes the graph whole."""
    from segbench.export.tensorrt_readiness import check_tensorrt_readiness

    return splitting_ops(check_tensorrt_readiness(graph_path).op_counts, config)


def splitting_ops(op_types: Iterable[str], config: OnnxRuntimeConfig) -> list[str]:
    """Of ``op_types``, those the TensorRT provider leaves off TensorRT (see :func:`partition_ops`)."""
    from segbench.export.tensorrt_readiness import SUPPORTED_OPS

    excluded = str(config.tensorrt_options.get("trt_op_types_to_exclude", ",".join(DEFAULT_EXCLUDED_OPS)))
    wanted = {op.strip() for op in excluded.split(",") if op.strip()}
    return sorted(op for op in set(op_types) if op in wanted or op not in SUPPORTED_OPS)


def plan_notes(
    config: BackendConfig,
    precision: str,
    graph_ops: frozenset[str] | None,
    served: Sequence[tuple[int, ...]],
) -> tuple[str, ...]:
    """What a dry run says of a TensorRT-provider entry: which optimization profile its engines get
    (one explicit profile, or an engine per shape for a graph the provider splits; undecided until
    export for a graph whose ops are not known yet) and what precision its math really runs at."""
    assert isinstance(config, OnnxRuntimeConfig)  # SPEC's config class: the registry hands it this one
    if config.device != "cuda":
        return ()
    if not config.tensorrt:
        return (f"CUDA provider: TF32 {'on' if config.tf32 else 'off'} (use_tf32)",)
    split = splitting_ops(graph_ops, config) if graph_ops is not None else None
    if "trt_profile_min_shapes" in config.tensorrt_options:
        profile = "the YAML's explicit profile"
    elif split is None:
        profile = "decided at export: one explicit profile unless the graph splits, else an engine per shape"
    elif split:
        off = ", ".join(split)
        profile = f"an engine per shape, no explicit profile (the graph splits: {off} stay off TensorRT)"
    elif served:
        from segbench.backends.tensorrt.profile import profile_from_shapes

        shape = profile_from_shapes("images", served)
        profile = f"one explicit profile, {_shape_text(shape.min)} to {_shape_text(shape.max)}"
    else:
        profile = "an engine per shape (no cells to span)"
    notes = [f"TensorRT provider profile: {profile}"]
    if precision == "fp32":
        notes.append("fp32 runs at TF32: the TensorRT provider has no TF32 switch (judged on the TF32 peak)")
    elif precision == "fp16":
        try:
            flag = tensorrt_precision_flag(precision, onnxruntime_version())
        except ImportError:
            flag = None
        notes.append(
            "fp16 graph, weakly typed network with trt_fp16_enable (onnxruntime < 1.22)"
            if flag
            else "fp16 graph, strongly typed network: its fp32 keep-list stays fp32"
        )
    return tuple(notes)


def _shape_text(shape: Sequence[int]) -> str:
    return f"b{shape[0]} {shape[2]}x{shape[3]}"


def provider_options(
    config: OnnxRuntimeConfig,
    input_name: str,
    input_shapes: list[tuple[int, ...]],
    cache_dir: Path | None = None,
    precision: str = "fp32",
    graph_path: Path | None = None,
    ort_version: tuple[int, int] | None = None,
    partitioned_by: list[str] | None = None,
) -> list[dict[str, str]]:
    """Options for each provider of ``requested_providers(config)``, in the same order, for the graph at
    ``graph_path`` of ``precision`` on onnxruntime ``ort_version`` (default: the installed one); options
    given in the YAML win over the derived ones. A graph the provider splits (``partitioned_by``, see
    :func:`partition_ops`) gets no explicit profile: the later subgraphs' dynamic inputs would have none,
    which onnxruntime refuses; the provider then builds an engine per new shape."""
    from segbench.backends.tensorrt.engine_cache import onnx_digest
    from segbench.backends.tensorrt.profile import profile_from_shapes
    from segbench.cache_dir import cache_root

    options: list[dict[str, str]] = []
    for provider in requested_providers(config):
        if provider == TENSORRT_PROVIDER:
            derived: dict[str, Any] = {}
            if config.trt_engine_cache:
                root = (cache_dir or cache_root()) / "onnxruntime-tensorrt"
                # onnxruntime's engine id hashes the graph's file name, tensor names and versions, not its
                # weights, and every segbench export is model.onnx: engines go in a directory per graph
                # digest, or other weights with the same names would run a stale engine. Timing caches
                # hold kernel timings per layer configuration, safe to share.
                engines = root / onnx_digest(graph_path)[:20] if graph_path is not None else root
                derived |= {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(engines),
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": str(root),
                }
            if input_shapes and not partitioned_by:
                # One profile over every cell: without it the provider rebuilds its engine per new shape.
                derived |= profile_from_shapes(input_name, input_shapes).to_ort_options()
            if config.trt_workspace_mb is not None:
                derived["trt_max_workspace_size"] = config.trt_workspace_mb << 20
            flag = tensorrt_precision_flag(precision, ort_version or onnxruntime_version())
            if flag is not None:
                derived[flag] = True
            chosen = {**derived, **config.tensorrt_options}
        elif provider == CUDA_PROVIDER:
            # onnxruntime's CUDA provider defaults use_tf32 to 1; segbench's fp32 is fp32 unless asked.
            chosen = {"use_tf32": "1" if config.tf32 else "0", **config.cuda_options}
        else:
            chosen = {}
        options.append({key: _option_value(value) for key, value in chosen.items()})
    return options


def unavailable_reason(config: BackendConfig) -> str | None:
    assert isinstance(config, OnnxRuntimeConfig)  # SPEC's config class: the registry hands it this one
    try:
        import onnxruntime as ort
    except ImportError:
        return f"onnxruntime is not installed ({INSTALL_HINT})"
    if len(_installed_distributions()) > 1:
        return "both onnxruntime and onnxruntime-gpu are installed; uninstall both and install one"
    available = ort.get_available_providers()
    requested = requested_providers(config)
    missing = [p for p in requested if p not in available]
    if missing:
        return f"this onnxruntime build has no {', '.join(missing)} (install onnxruntime-gpu: segbench[gpu])"
    if requested[0] == CPU_PROVIDER:
        return None
    return provider_load_failure(tuple(requested))


def load_tensorrt_libraries() -> None:
    """Make TensorRT's libraries findable for onnxruntime's TensorRT provider, which opens
    libnvinfer.so.10 by name and carries no library path of its own: pip's TensorRT libraries
    (``tensorrt_libs``, from segbench[ort-trt]) are found only once loaded, which importing the package
    does. Without it the system's library path must hold them; the session probe says when it does not."""
    with contextlib.suppress(ImportError, OSError):
        importlib.import_module("tensorrt_libs")


@functools.cache
def provider_load_failure(requested: tuple[str, ...]) -> str | None:
    """Why the first of ``requested`` cannot run here, found by opening a session on a one-node graph:
    ``get_available_providers()`` lists what was compiled in, not what can load (a TensorRT provider
    linked against another TensorRT major than the one installed, missing CUDA libraries). None when it
    runs. Once per process and provider list: the plan asks for every entry."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if TENSORRT_PROVIDER in requested:
        load_tensorrt_libraries()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=list(requested))
        active = session.get_providers()
    except Exception as exc:  # whatever the provider's loader raises is the reason
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"onnxruntime lists {requested[0]} but cannot open a session with it: {first}"
    if not active or active[0] != requested[0]:
        fallback = ", ".join(active) or "nothing"
        return (f"onnxruntime lists {requested[0]} but cannot load it (a session fell back to {fallback}): "
                "its libraries are missing or of another version")  # fmt: skip
    return None


class OnnxRuntimeRunner(Runner):
    # With I/O binding only, all timed on the host: onnxruntime offers no CUDA events around its own
    # stream, so the run is ``run_host`` (host wall time of run_with_iobinding, which returns when the
    # device work is done), never ``compute``, the device-event time torch and TensorRT report.
    device_stages = ("h2d", "run_host", "d2h")
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
        tensorrt = TENSORRT_PROVIDER in requested
        if tensorrt:
            load_tensorrt_libraries()
        self.partitioned_by = partition_ops(Path(self.graph_path), self.config) if tensorrt else []
        self.provider_options = provider_options(
            self.config, self.model.input_names[0], self.input_shapes, precision=self.precision,
            graph_path=Path(self.graph_path), partitioned_by=self.partitioned_by,
        )  # fmt: skip
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
        # The CUDA ordinal the session runs on: bound inputs and outputs must live there too.
        self._device_id = (
            int(self.config.cuda_options.get("device_id", 0)) if self._ort_device == "cuda" else 0
        )
        self.pinned = self._pinned_staging()
        self._staging: dict[tuple[Any, ...], tuple[Any, np.ndarray]] = {}

    def _pinned_staging(self) -> bool:
        """Whether inputs go through page-locked buffers (torch's pinned host allocator: onnxruntime's
        Python API has no pinned host buffer to fill from numpy)."""
        wanted = self.config.pinned_memory
        if not (self.io_binding and self._ort_device == "cuda") or wanted is False:
            return False
        import torch

        if not torch.cuda.is_available():
            if wanted:
                raise BackendError("pinned_memory needs a torch build with CUDA (page-locked buffers)")
            return False  # a CPU-only torch next to onnxruntime-gpu: pageable copies, as describe() says
        return True

    def _stage(self, name: str, array: np.ndarray) -> np.ndarray:
        """``array`` copied into this input's page-locked buffer (one per name, shape and dtype)."""
        key = (name, array.shape, array.dtype.str)
        if key not in self._staging:
            import torch

            dtype = torch.from_numpy(np.empty(0, array.dtype)).dtype
            pinned = torch.empty(array.shape, dtype=dtype, pin_memory=True)
            self._staging[key] = (pinned, pinned.numpy())  # the tensor keeps the page-locked memory
        view = self._staging[key][1]
        np.copyto(view, array)
        return view

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.io_binding:
            outputs = self.session.run(self._output_names, feeds)
            return dict(zip(self._output_names, outputs, strict=True))
        import onnxruntime as ort

        clock = time.perf_counter_ns
        binding = self.session.io_binding()
        # Staging into pinned memory is host work before the copy, as torch's is before its h2d event.
        if self.pinned:
            feeds = {name: self._stage(name, array) for name, array in feeds.items()}
        t0 = clock()
        for name, array in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, self._ort_device, self._device_id)
            binding.bind_ortvalue_input(name, value)
        for name in self._output_names:
            binding.bind_output(name, self._ort_device, self._device_id)
        t1 = clock()
        self.session.run_with_iobinding(binding)  # returns when the device work is done
        t2 = clock()
        outputs = binding.copy_outputs_to_cpu()
        t3 = clock()
        self.last_stages_ms = {"h2d": (t1 - t0) / 1e6, "run_host": (t2 - t1) / 1e6, "d2h": (t3 - t2) / 1e6}
        return dict(zip(self._output_names, outputs, strict=True))

    def release_cached_shapes(self) -> None:
        self._staging.clear()

    @property
    def _tensorrt_active(self) -> bool:
        return bool(getattr(self, "active_providers", None)) and self.active_providers[0] == TENSORRT_PROVIDER

    def batch_limit(self) -> tuple[int, str] | None:
        """With the TensorRT provider and its explicit profile: the profile's largest batch (a larger one
        would fall outside it and rebuild the engine)."""
        chosen = dict(zip(requested_providers(self.config), self.provider_options, strict=True))
        if not self._tensorrt_active or "trt_profile_max_shapes" not in chosen.get(TENSORRT_PROVIDER, {}):
            return None
        batch = max(shape[0] for shape in self.input_shapes)
        return batch, f"the TensorRT provider's optimization profile ends at batch {batch}"

    def deactivate(self) -> None:
        self.session = None
        self._staging = {}
        super().deactivate()

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        info: dict[str, Any] = {
            "onnxruntime": ort.__version__,
            "provider": self.active_providers[0],
            "io_binding": self.io_binding,
        }
        if self._ort_device == "cuda":
            info["pinned_memory"] = self.pinned
        if self.emulated:
            info["fp16_emulated"] = True
        if self._tensorrt_active:
            partitioned = ", ".join(getattr(self, "partitioned_by", []))
            info["trt_profile"] = (
                f"per shape: the graph is partitioned ({partitioned} stay off TensorRT)"
                if partitioned
                else "explicit: one profile over every cell"
            )
        if self._tensorrt_active and self.precision == "fp32":
            # The provider has no TF32 switch (onnxruntime issue 26029) and TensorRT allows TF32 by
            # default: an fp32 graph runs its convolutions and matmuls at TF32, and is judged so.
            info["tf32"] = True
            info["tf32_forced_by"] = "the TensorRT execution provider (no switch; TensorRT's default)"
        chosen = dict(zip(requested_providers(self.config), self.provider_options, strict=True))
        if chosen.get(self.active_providers[0]):
            info["provider_options"] = chosen[self.active_providers[0]]
        if self.active_providers[0] == TENSORRT_PROVIDER and chosen.get(CUDA_PROVIDER):
            # What TensorRT does not take runs on the CUDA provider, with these (use_tf32 among them).
            info["cuda_provider_options"] = chosen[CUDA_PROVIDER]
        return info


SPEC = BackendSpec(name="onnxruntime", config_class=OnnxRuntimeConfig, runner_class=OnnxRuntimeRunner,
                   consumes=GRAPH, unavailable=unavailable_reason, plan_notes=plan_notes)  # fmt: skip
