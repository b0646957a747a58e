"""TensorRT engines: build from ONNX, cache on disk, and run with torch CUDA tensors as buffers.

Three parts, all written against NVIDIA's documented TensorRT Python API for the 10.x and 11.x majors:

* **Builder** (:func:`build_serialized_engine`): ONNX file -> serialized engine, with one optimization
  profile derived from the benchmark's sweep shapes, an optional workspace limit and builder optimization
  level, and a timing cache kept on disk so that later builds skip kernel timing they already did.
  Precision is handled per major version: TensorRT 10 takes the fp32 graph and lowers it with
  ``BuilderFlag.FP16`` / ``BF16``; TensorRT 11 has no such flags (every network is strongly typed), so
  the caller must hand over a graph that already carries the precision (an fp16 graph for fp16).
* **Cache** (:func:`load_or_build_engine`): engines are keyed by everything that decides their bytes
  (ONNX digest, precision, profile, TensorRT version, GPU name and compute capability, workspace,
  optimization level) and written atomically, so a killed build never leaves an engine a later run trusts.
* **Runtime** (:class:`TensorRTEngine`): named I/O tensors (``set_input_shape`` / ``set_tensor_address``
  / ``execute_async_v3``), device buffers from torch's allocator (no pycuda or cuda-python), an
  ``IOutputAllocator`` for outputs whose shape depends on the data (NMS, NonZero), optional CUDA events
  for GPU compute time and optional CUDA graph capture.

What was and was not verified: this module has never run against a real TensorRT installation here
(TensorRT cannot be installed on the project's machines, see ``shared/notes/tensorrt.md``). The calls
follow NVIDIA's Python API reference for TensorRT 10 and 11; the unit tests run them against a stand-in
``tensorrt`` module (``tests/fakes/fake_tensorrt.py``) that implements that documented surface and
checks the arguments, on the CPU. The CUDA-only paths (streams, events, graph capture) have not run at
all. Treat the first run on a GPU with TensorRT as the real test.

``tensorrt`` is imported lazily, inside functions: this module imports fine where it is not installed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from segbench.errors import SegbenchError, first_line
from segbench.export.cache import cache_key, cache_root, file_digest
from segbench.files import atomic_write_bytes

INSTALL_HINT = (
    "TensorRT is not installed: pip install 'segbench[trt]' (needs an NVIDIA GPU and NVIDIA's package index)"
)
SUPPORTED_MAJORS = (10, 11)
PRECISIONS = ("fp32", "fp16", "bf16")
# TensorRT's allocator contract asks for at least the requested alignment; 256 bytes covers every
# element type and matches cudaMalloc's guarantee.
MIN_ALIGNMENT = 256


class TensorRTUnavailable(SegbenchError):
    """TensorRT (or a GPU for it) is missing or unsupported on this machine: a setup problem, not a bug."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX graph or build an engine from it."""


# -- import and version ------------------------------------------------------------------------------


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailable` with one line saying how to get it.

    The version is checked here too, so every caller gets a supported major or a clear refusal.
    """
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailable(INSTALL_HINT) from None
    except OSError as exc:  # the bindings are there but libnvinfer is not loadable
        raise TensorRTUnavailable(
            f"TensorRT is installed but its libraries failed to load: {first_line(exc)}"
        ) from None
    tensorrt_version(tensorrt)
    return tensorrt


def tensorrt_version(trt: ModuleType) -> tuple[int, int]:
    """``(major, minor)`` of the TensorRT module; majors other than 10 and 11 are refused.

    TensorRT 9 and older use binding indices and ``execute_async_v2``, which this code does not speak.
    """
    version = str(getattr(trt, "__version__", ""))
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise TensorRTUnavailable(f"cannot read the TensorRT version from {version!r}")
    major, minor = int(match.group(1)), int(match.group(2))
    if major not in SUPPORTED_MAJORS:
        raise TensorRTUnavailable(
            f"TensorRT {version} is not supported: segbench needs TensorRT "
            f"{' or '.join(str(m) for m in SUPPORTED_MAJORS)}"
        )
    return major, minor


@functools.lru_cache(maxsize=4)
def default_logger(trt: ModuleType) -> Any:
    """One warning-level logger per TensorRT module: TensorRT warns when loggers differ."""
    return trt.Logger(trt.Logger.WARNING)


# -- optimization profile ---------------------------------------------------------------------------

Shape = tuple[int, int, int, int]


def _shape4(value: Sequence[int], what: str) -> Shape:
    shape = tuple(int(d) for d in value)
    if len(shape) != 4 or any(d < 1 for d in shape):
        raise ValueError(f"{what} must be 4 positive ints (NCHW), got {tuple(value)}")
    return shape  # type: ignore[return-value]


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


@dataclass(frozen=True)
class OptimizationProfile:
    """The min / opt / max NCHW shapes one engine accepts for its (single) image input."""

    input_name: str
    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for field_name in ("min", "opt", "max"):
            object.__setattr__(self, field_name, _shape4(getattr(self, field_name), field_name))
        if not all(lo <= o <= hi for lo, o, hi in zip(self.min, self.opt, self.max, strict=True)):
            raise ValueError(
                f"profile needs min <= opt <= max per dim, got {self.min}, {self.opt}, {self.max}"
            )

    def to_ort_options(self) -> dict[str, str]:
        """The same profile as onnxruntime TensorRT execution-provider options (``name:NxCxHxW``)."""
        return {
            f"trt_profile_{which}_shapes": f"{self.input_name}:{_shape_text(getattr(self, which))}"
            for which in ("min", "opt", "max")
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_name": self.input_name,
            "min": list(self.min),
            "opt": list(self.opt),
            "max": list(self.max),
        }


def profile_from_shapes(input_name: str, shapes: Sequence[Sequence[int]]) -> OptimizationProfile:
    """The profile spanning every sweep shape: elementwise min and max, and as ``opt`` the heaviest shape.

    TensorRT tunes kernels for ``opt``; the largest cell costs the most time, so that is where tuning pays
    most (on equal element counts the later shape wins, so the choice is deterministic).
    """
    cells = [_shape4(shape, "sweep shape") for shape in shapes]
    if not cells:
        raise ValueError("no input shapes to derive an optimization profile from")
    lowest = tuple(min(dims) for dims in zip(*cells, strict=True))
    highest = tuple(max(dims) for dims in zip(*cells, strict=True))
    heaviest = cells[0]
    for cell in cells[1:]:
        if math.prod(cell) >= math.prod(heaviest):
            heaviest = cell
    return OptimizationProfile(input_name, lowest, heaviest, highest)  # type: ignore[arg-type]


# -- cache key ----------------------------------------------------------------------------------------


def engine_key_fields(
    onnx_digest: str,
    precision: str,
    profile: OptimizationProfile,
    trt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    workspace_mb: int | None,
    builder_optimization_level: int | None,
) -> dict[str, Any]:
    """Everything that decides an engine's bytes; engines are not portable across GPUs or TensorRT builds."""
    return {
        "kind": "tensorrt-engine",
        "onnx_digest": onnx_digest,
        "precision": precision,
        "profile": profile.to_dict(),
        "tensorrt": trt_version,
        "gpu_name": gpu_name,
        "compute_capability": [int(c) for c in compute_capability],
        "workspace_mb": workspace_mb,
        "builder_optimization_level": builder_optimization_level,
    }


def engine_cache_key(**fields: Any) -> str:
    """A short stable hash of :func:`engine_key_fields` (same arguments): any change gives a new engine."""
    return cache_key(engine_key_fields(**fields))


def onnx_digest(onnx_path: str | Path) -> str:
    """Digest of the graph file and, when present, its external-data file ``<path>.data``.

    Large models keep their weights in the external file; hashing only the graph would let a weights
    change reuse a stale engine.
    """
    digest = file_digest(onnx_path)
    data = Path(f"{onnx_path}.data")
    if data.is_file():
        digest = hashlib.sha256(f"{digest}:{file_digest(data)}".encode()).hexdigest()
    return digest


# -- builder ------------------------------------------------------------------------------------------


def _parser_errors(parser: Any) -> str:
    messages = [str(parser.get_error(i)).strip() for i in range(int(parser.num_errors))]
    return "; ".join(m for m in messages if m) or "no error message from the parser"


def _add_profile(
    trt: ModuleType, builder: Any, network: Any, config: Any, profile: OptimizationProfile
) -> bool:
    """Add ``profile`` for the network's dynamic input; False when every input is static (none needed).

    TensorRT needs a profile covering every input with a -1 dim; a profile naming another input, or
    one that contradicts a static dim, would only fail later inside the build, so it is refused here.
    """
    dynamic = {}
    for i in range(int(network.num_inputs)):
        tensor = network.get_input(i)
        shape = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in shape):
            dynamic[tensor.name] = shape
    if not dynamic:
        return False
    uncovered = sorted(name for name in dynamic if name != profile.input_name)
    if profile.input_name not in dynamic or uncovered:
        raise EngineBuildError(
            f"the optimization profile covers input {profile.input_name!r}, but the network's dynamic "
            f"inputs are {', '.join(sorted(dynamic))}"
        )
    shape = dynamic[profile.input_name]
    if len(shape) != 4:
        raise EngineBuildError(f"input {profile.input_name!r} has shape {shape}, expected 4-D NCHW")
    for axis, dim in enumerate(shape):
        if dim >= 0 and not profile.min[axis] == dim == profile.max[axis]:
            raise EngineBuildError(
                f"input {profile.input_name!r} has static dim {dim} at axis {axis}, but the profile spans "
                f"{profile.min[axis]}..{profile.max[axis]}"
            )
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(profile.input_name, profile.min, profile.opt, profile.max)
    index = config.add_optimization_profile(trt_profile)
    if isinstance(index, int) and index < 0:
        raise EngineBuildError(f"TensorRT rejected the optimization profile {profile.to_dict()}")
    return True


def _set_timing_cache(config: Any, timing_cache_path: Path | None) -> None:
    data = (
        timing_cache_path.read_bytes()
        if timing_cache_path is not None and timing_cache_path.is_file()
        else b""
    )
    cache = config.create_timing_cache(data)
    # ignore_mismatch=False: a cache from another TensorRT build or GPU is refused; start afresh then.
    accepted = cache is not None and config.set_timing_cache(cache, False)
    if not accepted and data:
        config.set_timing_cache(config.create_timing_cache(b""), False)


def build_serialized_engine(
    trt: ModuleType,
    onnx_path: str | Path,
    precision: str,
    profile: OptimizationProfile,
    *,
    workspace_mb: int | None = None,
    builder_optimization_level: int | None = None,
    timing_cache_path: str | Path | None = None,
    logger: Any = None,
) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine at ``precision``.

    On TensorRT 10, fp16/bf16 come from builder flags on the fp32 graph (a weakly typed network). On
    TensorRT 11 the network is strongly typed and the graph's own types are the precision, so an fp16
    engine needs an fp16 graph from the caller. The timing cache at ``timing_cache_path`` is read when
    present and written back (atomically) after a successful build.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (expected one of {', '.join(PRECISIONS)})")
    major, _ = tensorrt_version(trt)
    logger = logger if logger is not None else default_logger(trt)
    builder = trt.Builder(logger)
    # 11 is always strongly typed (the flag is accepted and ignored; passing it states the intent).
    # 10 gets a weakly typed network, so the builder may lower precision where the flags below allow it.
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if major >= 11 else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file (not parse(bytes)) resolves external-data files next to the graph.
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_path}: {_parser_errors(parser)}")

    config = builder.create_builder_config()
    if major == 10 and precision != "fp32":
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if builder_optimization_level is not None:
        config.builder_optimization_level = int(builder_optimization_level)
    _add_profile(trt, builder, network, config, profile)
    cache_path = Path(timing_cache_path) if timing_cache_path is not None else None
    _set_timing_cache(config, cache_path)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    if cache_path is not None:
        timing_cache = config.get_timing_cache()
        if timing_cache is not None:
            atomic_write_bytes(cache_path, bytes(timing_cache.serialize()))
    return bytes(serialized)


# -- engine cache -------------------------------------------------------------------------------------


@dataclass
class EngineArtifact:
    """An engine file in the cache and how it came to be (built now, or reused)."""

    path: Path
    key: str
    built: bool
    build_s: float
    trt_version: str
    gpu_name: str
    profile: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def gpu_identity() -> tuple[str, tuple[int, int]]:
    """The current CUDA device's name and compute capability (engines are specific to both)."""
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT needs a CUDA GPU; none is visible to torch")
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), (int(major), int(minor))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def timing_cache_file(
    cache_dir: Path, trt_version: tuple[int, int], gpu_name: str, capability: tuple[int, int]
) -> Path:
    """The timing cache shared by every build for one TensorRT minor version and GPU model."""
    major, minor = trt_version
    return cache_dir / f"timing-trt{major}.{minor}-{_slug(gpu_name)}-sm{capability[0]}{capability[1]}.cache"


def load_or_build_engine(
    onnx_path: str | Path,
    precision: str,
    profile: OptimizationProfile,
    *,
    cache_dir: str | Path | None = None,
    workspace_mb: int | None = None,
    builder_optimization_level: int | None = None,
) -> EngineArtifact:
    """The cached engine for these inputs, building (and caching) it first when there is none.

    Builds take seconds to many minutes; a benchmark that re-runs with the same graph, GPU and options
    reuses the engine. The sidecar ``<key>.json`` holds the key fields for people inspecting the cache;
    it is written before the engine so an engine file never exists without it.
    """
    trt = import_tensorrt()
    version = tensorrt_version(trt)
    gpu_name, capability = gpu_identity()
    fields = engine_key_fields(
        onnx_digest(onnx_path),
        precision,
        profile,
        str(trt.__version__),
        gpu_name,
        capability,
        workspace_mb,
        builder_optimization_level,
    )
    key = cache_key(fields)
    directory = Path(cache_dir) if cache_dir is not None else cache_root() / "tensorrt"
    engine_path = directory / f"{key}.engine"
    artifact = EngineArtifact(engine_path, key, False, 0.0, str(trt.__version__), gpu_name, profile.to_dict())
    if engine_path.is_file():
        return artifact
    start = time.perf_counter()
    engine_bytes = build_serialized_engine(
        trt,
        onnx_path,
        precision,
        profile,
        workspace_mb=workspace_mb,
        builder_optimization_level=builder_optimization_level,
        timing_cache_path=timing_cache_file(directory, version, gpu_name, capability),
    )
    artifact.build_s = time.perf_counter() - start
    artifact.built = True
    sidecar = {**fields, "onnx_path": str(onnx_path), "build_s": round(artifact.build_s, 3)}
    atomic_write_bytes(directory / f"{key}.json", (json.dumps(sidecar, indent=2) + "\n").encode())
    atomic_write_bytes(engine_path, engine_bytes)
    return artifact


# -- runtime ------------------------------------------------------------------------------------------

_TORCH_DTYPES = (
    ("FLOAT", torch.float32),
    ("HALF", torch.float16),
    ("BF16", torch.bfloat16),
    ("INT32", torch.int32),
    ("INT64", torch.int64),
    ("INT8", torch.int8),
    ("BOOL", torch.bool),
    ("UINT8", torch.uint8),
)


def torch_dtype(trt: ModuleType, trt_dtype: Any) -> torch.dtype:
    """The torch dtype of a TensorRT ``DataType`` (FP8 / INT4 / FP4 I/O tensors are not supported)."""
    for name, dtype in _TORCH_DTYPES:
        member = getattr(trt.DataType, name, None)
        if member is not None and trt_dtype == member:
            return dtype
    raise TypeError(f"TensorRT I/O type {trt_dtype} has no torch equivalent here")


def _make_output_allocator(trt: ModuleType, device: torch.device) -> Any:
    """An ``IOutputAllocator`` that hands TensorRT torch-owned device memory for data-dependent outputs.

    TensorRT calls ``reallocate_output_async`` once it knows the byte size of such an output, and
    ``notify_shape`` with its final shape; the buffer grows when needed and is reused otherwise.
    """

    class TorchOutputAllocator(trt.IOutputAllocator):  # type: ignore[name-defined, misc]
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)  # the bindings need the base initialised explicitly
            self.buffers: dict[str, torch.Tensor] = {}
            self.offsets: dict[str, int] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output_async(
            self, tensor_name: str, memory: Any, size: int, alignment: int, stream: Any
        ) -> int:
            align = max(int(alignment), MIN_ALIGNMENT)
            need = max(int(size), 1) + align  # room to align the start
            buffer = self.buffers.get(tensor_name)
            if buffer is None or buffer.numel() < need:
                grown = need if buffer is None else max(need, 2 * buffer.numel())
                buffer = torch.empty(grown, dtype=torch.uint8, device=device)
                self.buffers[tensor_name] = buffer
            offset = -buffer.data_ptr() % align
            self.offsets[tensor_name] = offset
            return buffer.data_ptr() + offset

        def reallocate_output(self, tensor_name: str, memory: Any, size: int, alignment: int) -> int:
            # The older synchronous callback; TensorRT 10+ calls the async one, kept for completeness.
            return self.reallocate_output_async(tensor_name, memory, size, alignment, 0)

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

        def tensor(self, tensor_name: str, dtype: torch.dtype) -> torch.Tensor:
            """The output as a view of its buffer with the notified shape and ``dtype``."""
            if tensor_name not in self.shapes or tensor_name not in self.buffers:
                raise RuntimeError(f"TensorRT did not produce data-dependent output {tensor_name!r}")
            shape = self.shapes[tensor_name]
            nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            start = self.offsets[tensor_name]
            return self.buffers[tensor_name][start : start + nbytes].view(dtype).reshape(shape)

    return TorchOutputAllocator()


@dataclass
class _CapturedGraph:
    key: tuple
    graph: Any
    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]


class TensorRTEngine:
    """One deserialized engine with one execution context, fed and read through torch tensors.

    ``infer`` returns the engine's own output buffers (reused by the next call): copy or clone them
    before calling again. On a CPU device (tests with a stand-in module) the stream handle is 0 and
    CUDA events and graphs are off.
    """

    def __init__(
        self,
        trt: ModuleType,
        engine_bytes: bytes,
        device: torch.device,
        logger: Any = None,
        *,
        record_compute_ms: bool = False,
        use_cuda_graph: bool = False,
    ) -> None:
        self.trt = trt
        self.device = torch.device(device)
        self._logger = logger if logger is not None else default_logger(trt)
        self._runtime = trt.Runtime(self._logger)  # kept alive as long as the engine
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (built by another version or GPU?)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of device memory?)")
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._dtypes: dict[str, torch.dtype] = {}
        for i in range(int(self.engine.num_io_tensors)):
            name = self.engine.get_tensor_name(i)
            mode = self.engine.get_tensor_mode(name)
            if mode == trt.TensorIOMode.INPUT:
                self._inputs.append(name)
            elif mode == trt.TensorIOMode.OUTPUT:
                self._outputs.append(name)
            else:
                continue
            self._dtypes[name] = torch_dtype(trt, self.engine.get_tensor_dtype(name))
        self._allocator: Any = None
        self._data_dependent: set[str] = set()
        self._probe_data_dependent_outputs()
        self._buffers: dict[str, torch.Tensor] = {}
        self._bound_inputs: dict[str, torch.Tensor] = {}
        self._on_cuda = self.device.type == "cuda"
        self._events = None
        if record_compute_ms and self._on_cuda:
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        self._timed = False
        self.cuda_graph_active = bool(use_cuda_graph and self._on_cuda and not self._data_dependent)
        self._graph: _CapturedGraph | None = None

    # -- introspection ----------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    @property
    def has_data_dependent_outputs(self) -> bool:
        return bool(self._data_dependent)

    @property
    def device_memory_bytes(self) -> int:
        """Activation memory TensorRT allocates per execution context (outside torch's allocator)."""
        size = getattr(self.engine, "device_memory_size_v2", None)
        if size is None:
            size = self.engine.device_memory_size
        return int(size)

    @property
    def last_compute_ms(self) -> float | None:
        """GPU time of the last execution between CUDA events on its stream (waits for it to finish)."""
        if self._events is None or not self._timed:
            return None
        start, end = self._events
        end.synchronize()
        return float(start.elapsed_time(end))

    def _probe_data_dependent_outputs(self) -> None:
        """Find outputs whose shape stays unknown (-1) once every input shape is set.

        Dynamic inputs are set to their profile's opt shape for the probe; an output with a -1 dim then
        depends on the data and needs an output allocator (and rules out CUDA graphs).
        """
        for name in self._inputs:
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                shape = tuple(int(d) for d in self.engine.get_tensor_profile_shape(name, 0)[1])
            self.context.set_input_shape(name, shape)
        for name in self._outputs:
            if any(int(d) < 0 for d in self.context.get_tensor_shape(name)):
                self._use_allocator(name)

    def _use_allocator(self, name: str) -> None:
        if self._allocator is None:
            self._allocator = _make_output_allocator(self.trt, self.device)
        self.context.set_output_allocator(name, self._allocator)
        self._data_dependent.add(name)

    # -- execution --------------------------------------------------------------------------------
    def _prepare(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [name for name in self._inputs if name not in inputs]
        if missing:
            raise ValueError(f"missing engine inputs: {', '.join(missing)} (got {', '.join(inputs)})")
        return {
            name: inputs[name].to(device=self.device, dtype=self._dtypes[name]).contiguous()
            for name in self._inputs
        }

    def _bind(self, inputs: Mapping[str, torch.Tensor], *, fresh: bool = False) -> dict[str, torch.Tensor]:
        """Set input shapes and addresses and output addresses; returns the static output buffers used.

        Output buffers are reused across calls and reallocated only when an output's shape changed;
        ``fresh`` gives new buffers that nothing else uses (the static buffers of a CUDA graph).
        """
        for name, tensor in inputs.items():
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise ValueError(
                    f"input {name!r} shape {tuple(tensor.shape)} is outside the engine's optimization profile"
                )
            self.context.set_tensor_address(name, tensor.data_ptr())
        bound = {}
        for name in self._outputs:
            if name in self._data_dependent:
                continue
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):  # data-dependent after all (not seen by the probe)
                self._use_allocator(name)
                self.cuda_graph_active = False
                continue
            buffer = None if fresh else self._buffers.get(name)
            if buffer is None or tuple(buffer.shape) != shape:
                buffer = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
                if not fresh:
                    self._buffers[name] = buffer
            bound[name] = buffer
            self.context.set_tensor_address(name, buffer.data_ptr())
        return bound

    def _execute(self, stream_handle: int) -> None:
        if not self.context.execute_async_v3(stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see its log above)")

    def _results(self, static: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        results = {}
        for name in self._outputs:
            if name in self._data_dependent:
                results[name] = self._allocator.tensor(name, self._dtypes[name])
            else:
                results[name] = static[name]
        return results

    def infer(
        self, inputs: Mapping[str, torch.Tensor], stream: torch.cuda.Stream | None = None
    ) -> dict[str, torch.Tensor]:
        """Run the engine on ``inputs`` (by name) and return its outputs by name, on the engine's device.

        Work is queued on ``stream`` (the current CUDA stream when None) and is not waited for: read the
        outputs on that stream or after synchronising it. For data-dependent outputs TensorRT reports the
        shape (``notify_shape``) before ``execute_async_v3`` returns, waiting internally as it needs to.
        """
        if not self._on_cuda:
            return self._infer_on(inputs, None, 0)
        stream = stream if stream is not None else torch.cuda.current_stream(self.device)
        with torch.cuda.stream(stream):
            return self._infer_on(inputs, stream, stream.cuda_stream)

    def _infer_on(
        self, inputs: Mapping[str, torch.Tensor], stream: torch.cuda.Stream | None, handle: int
    ) -> dict[str, torch.Tensor]:
        prepared = self._prepare(inputs)
        if self.cuda_graph_active and stream is not None:
            return self._replay(prepared, stream)
        self._bound_inputs = prepared  # keep the inputs alive until the next call
        static = self._bind(prepared)
        self._timed_execute(stream, lambda: self._execute(handle))
        return self._results(static)

    def _timed_execute(self, stream: torch.cuda.Stream | None, run: Any) -> None:
        if self._events is None or stream is None:
            run()
            return
        start, end = self._events
        start.record(stream)
        run()
        end.record(stream)
        self._timed = True

    def _replay(
        self, prepared: dict[str, torch.Tensor], stream: torch.cuda.Stream
    ) -> dict[str, torch.Tensor]:
        """Run through a CUDA graph captured for these input shapes, capturing it on first use.

        One graph is kept: a change of input shapes recaptures, because a context's device state is only
        known to match the graph that was captured last. Inputs are copied into the graph's static buffers.
        """
        key = tuple((name, tuple(t.shape)) for name, t in prepared.items())
        if self._graph is None or self._graph.key != key:
            self._graph = None
            static_inputs = {name: t.clone() for name, t in prepared.items()}
            static_outputs = self._bind(static_inputs, fresh=True)
            self._execute(stream.cuda_stream)  # warm-up: lets TensorRT do its one-off setup outside capture
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                self._execute(stream.cuda_stream)
            self._graph = _CapturedGraph(key, graph, static_inputs, static_outputs)
        else:
            for name, tensor in prepared.items():
                self._graph.inputs[name].copy_(tensor)
        graph = self._graph
        self._timed_execute(stream, graph.graph.replay)
        return dict(graph.outputs)

    def close(self) -> None:
        """Drop the graph, context and engine (in that order) and the buffers they used."""
        self._graph = None
        self._buffers.clear()
        self._bound_inputs = {}
        self._allocator = None
        self.context = None
        self.engine = None
        self._runtime = None
