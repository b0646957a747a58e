"""TensorRT engines: build from ONNX and cache on disk; :mod:`segbench.export.tensorrt_engine` runs them.

Two parts, both written against NVIDIA's documented TensorRT Python API for the 10.x and 11.x majors:

* **Builder** (:func:`build_serialized_engine`): ONNX file -> serialized engine, with one optimization
  profile derived from the benchmark's sweep shapes, an optional workspace limit and builder optimization
  level, and a timing cache kept on disk so that later builds skip kernel timing they already did.
  Precision is handled per major version (:func:`lowers_precision_by_flags`, the one place the rule
  lives): TensorRT 10 takes the fp32 graph and lowers it with ``BuilderFlag.FP16`` / ``BF16``; TensorRT
  11 has no such flags (every network is strongly typed), so the caller must hand over a graph that
  already carries the precision (an fp16 graph for fp16; :func:`graph_precision_for` says which).
* **Cache** (:func:`load_or_build_engine`): engines are keyed by everything that decides their bytes
  (ONNX digest, precision, profile, TensorRT version, GPU name and compute capability, workspace,
  optimization level) and written atomically, so a killed build never leaves an engine a later run trusts.

What was and was not verified: this module has never run against a real TensorRT installation here
(TensorRT cannot be installed on the project's machines, see ``shared/notes/tensorrt.md``). The calls
follow NVIDIA's Python API reference for TensorRT 10 and 11; the unit tests run them against a stand-in
``tensorrt`` module (``tests/fakes/fake_tensorrt.py``) that implements that documented surface and
checks the arguments, on the CPU. Treat the first run on a GPU with TensorRT as the real test.

``tensorrt`` is imported lazily, inside functions: this module imports fine where it is not installed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import time
from collections.abc import Sequence
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


def lowers_precision_by_flags(major: int) -> bool:
    """Whether TensorRT ``major`` builds fp16/bf16 engines from the fp32 graph with builder flags.

    True for 10 (a weakly typed network: ``BuilderFlag.FP16`` / ``BF16`` let the builder lower layers).
    False for 11, which dropped those flags: every network is strongly typed, so the graph's own types
    are the engine's precision.
    """
    return major == 10


def graph_precision_for(precision: str, trt: ModuleType) -> str:
    """The precision of the ONNX graph to hand ``trt`` for an engine at ``precision``."""
    major, _ = tensorrt_version(trt)
    return "fp32" if lowers_precision_by_flags(major) else precision


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
    by_flags = lowers_precision_by_flags(major)
    # 11 is always strongly typed (the flag is accepted and ignored; passing it states the intent).
    # 10 gets a weakly typed network, so the builder may lower precision where the flags below allow it.
    flags = 0 if by_flags else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file (not parse(bytes)) resolves external-data files next to the graph.
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_path}: {_parser_errors(parser)}")

    config = builder.create_builder_config()
    if by_flags and precision != "fp32":
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
