"""TensorRT engines: built through NVIDIA's Polygraphy and cached on disk; :mod:`.tensorrt_engine` runs them.

* **Build** (:func:`build_serialized_engine`): Polygraphy's loaders do the TensorRT calls:
  ``NetworkFromOnnxPath`` (a strongly typed network, see below), ``CreateConfig`` (the optimization
  profile derived from the sweep, the timing cache, workspace limit, builder optimization level, TF32)
  and ``EngineBytesFromNetwork`` (build, then merge the new timings into the timing cache file).
  segbench keeps what Polygraphy does not know: the profile from the sweep shapes, the check that it
  covers the network's dynamic inputs, and the precision rule.
* **Precision** (:func:`lowers_precision_by_flags`, :func:`graph_precision_for`: the one place the rule
  lives): the ONNX graph carries the precision and the network is strongly typed, on TensorRT 10 and 11
  alike, so segbench's fp32 keep-list in the fp16 graph holds. The one exception is bf16 on TensorRT 10:
  segbench writes no bf16 graph, so 10's ``BF16`` builder flag lowers the fp32 graph (weakly typed);
  TensorRT 11 has no such flag and needs a bf16 graph. TF32 (on by default in TensorRT) is cleared unless
  asked for, so an fp32 engine computes in fp32.
* **Cache** (:func:`load_or_build_engine`): engines are keyed by everything that decides their bytes
  (ONNX digest, precision, TF32, profile, TensorRT and Polygraphy versions, GPU name and compute
  capability, workspace, optimization level) and written atomically, so a killed build never leaves an
  engine a later run trusts.

Nothing here has run against a real TensorRT installation (TensorRT cannot be installed on the project's
machines, see ``shared/notes/tensorrt.md``). The unit tests run Polygraphy's loaders against a stand-in
``tensorrt`` module (``tests/fakes/fake_tensorrt.py``) on the CPU, and check every ``tensorrt`` attribute
segbench still names itself against the ``tensorrt-stubs`` package. Treat the first GPU run as the test.

``tensorrt`` and ``polygraphy`` are imported lazily, inside functions: this module imports without them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
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
POLYGRAPHY_HINT = "Polygraphy is not installed: pip install 'segbench[trt]' (segbench builds engines with it)"
SUPPORTED_MAJORS = (10, 11)
PRECISIONS = ("fp32", "fp16", "bf16")


class TensorRTUnavailable(SegbenchError):
    """TensorRT (or a GPU for it) is missing or unsupported on this machine: a setup problem, not a bug."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX graph or build an engine from it."""


# -- import and version ------------------------------------------------------------------------------


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or :class:`TensorRTUnavailable` with one line saying how to get it.

    The version is checked here too, so every caller gets a supported major or a clear refusal, and so is
    Polygraphy, which builds the engines.
    """
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailable(INSTALL_HINT) from None
    except OSError as exc:  # the bindings are there but libnvinfer is not loadable
        raise TensorRTUnavailable(
            f"TensorRT is installed but its libraries failed to load: {first_line(exc)}"
        ) from None
    if getattr(tensorrt, "__file__", None) is None and not hasattr(tensorrt, "__version__"):
        # A namespace package: only ``tensorrt-stubs`` (type stubs, no bindings) is installed.
        raise TensorRTUnavailable(INSTALL_HINT)
    tensorrt_version(tensorrt)
    polygraphy_trt()
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


def polygraphy_trt() -> ModuleType:
    """``polygraphy.backend.trt`` with Polygraphy's logger quiet below warnings (segbench prints its own
    progress); :class:`TensorRTUnavailable` when Polygraphy is missing. Imports no ``tensorrt`` itself."""
    try:
        from polygraphy.backend import trt as poly_trt
        from polygraphy.logger import G_LOGGER
    except ImportError:
        raise TensorRTUnavailable(POLYGRAPHY_HINT) from None
    G_LOGGER.colors = False  # no colours, and no notice that the optional 'colored' package is missing
    G_LOGGER.module_severity = G_LOGGER.WARNING
    return poly_trt


def lowers_precision_by_flags(major: int, precision: str) -> bool:
    """Whether TensorRT ``major`` makes a ``precision`` engine from the fp32 graph with a builder flag.

    Only bf16 on TensorRT 10: segbench writes no bf16 graph, and 10 still has ``BuilderFlag.BF16`` (a
    weakly typed network). Everything else is strongly typed from a graph at the precision, on 10 as on
    11 (where every network is strongly typed), so the fp16 graph's fp32 keep-list is obeyed; flags would
    let the builder pick each layer's precision and ignore it.
    """
    return major == 10 and precision == "bf16"


def graph_precision_for(precision: str, trt: ModuleType) -> str:
    """The precision of the ONNX graph ``trt`` needs for an engine at ``precision`` (bf16 on TensorRT 11:
    a bf16 graph, which segbench does not write; the backend refuses that up front)."""
    major, _ = tensorrt_version(trt)
    return "fp32" if lowers_precision_by_flags(major, precision) else precision


# -- optimization profile ---------------------------------------------------------------------------

Shape = tuple[int, int, int, int]


def _shape4(value: Sequence[int], what: str) -> Shape:
    shape = tuple(int(d) for d in value)
    if len(shape) != 4 or any(d < 1 for d in shape):
        raise ValueError(f"{what} must be 4 positive ints (NCHW), got {tuple(value)}")
    return shape


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
    return OptimizationProfile(input_name, lowest, heaviest, highest)


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
    tf32: bool = False,
    polygraphy_version: str = "",
) -> dict[str, Any]:
    """Everything that decides an engine's bytes; engines are not portable across GPUs or TensorRT builds.

    Polygraphy's version is in it because its ``CreateConfig`` defaults (e.g. profiling verbosity) shape
    the engine too.
    """
    return {
        "kind": "tensorrt-engine",
        "onnx_digest": onnx_digest,
        "precision": precision,
        "tf32": bool(tf32),
        "profile": profile.to_dict(),
        "polygraphy": polygraphy_version,
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


# -- builder (through Polygraphy) ---------------------------------------------------------------------


def network_loader(onnx_path: str | Path, precision: str, major: int) -> Any:
    """Polygraphy's ``NetworkFromOnnxPath`` for the graph: strongly typed unless ``precision`` is lowered
    by flags (:func:`lowers_precision_by_flags`). It parses with ``parse_from_file``, so external-data
    weights next to the graph are found."""
    poly = polygraphy_trt()
    return poly.NetworkFromOnnxPath(
        str(onnx_path), strongly_typed=not lowers_precision_by_flags(major, precision)
    )


def polygraphy_profile(profile: OptimizationProfile) -> Any:
    """segbench's profile as Polygraphy's ``Profile`` (one input, min / opt / max)."""
    return (
        polygraphy_trt().Profile().add(profile.input_name, min=profile.min, opt=profile.opt, max=profile.max)
    )


def create_config(
    trt: ModuleType,
    precision: str,
    profiles: Sequence[Any],
    *,
    tf32: bool = False,
    workspace_mb: int | None = None,
    builder_optimization_level: int | None = None,
    timing_cache_path: str | Path | None = None,
) -> Any:
    """Polygraphy's ``CreateConfig`` for an engine at ``precision`` with the given Polygraphy profiles.

    TF32 is set only when asked for: TensorRT turns it on by default, and ``CreateConfig(tf32=False)``
    clears it, so fp32 layers (an fp32 engine, the fp16 graph's keep-list) compute in fp32. The only
    precision flag ever set is ``bf16`` on TensorRT 10 (:func:`lowers_precision_by_flags`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (expected one of {', '.join(PRECISIONS)})")
    major, _ = tensorrt_version(trt)
    cache = Path(timing_cache_path) if timing_cache_path is not None else None
    return polygraphy_trt().CreateConfig(
        profiles=list(profiles),
        tf32=bool(tf32),
        bf16=lowers_precision_by_flags(major, precision),
        memory_pool_limits=(
            {trt.MemoryPoolType.WORKSPACE: int(workspace_mb) << 20} if workspace_mb is not None else None
        ),
        builder_optimization_level=builder_optimization_level,
        # Only an existing file: Polygraphy warns about a missing one, which the first build always is.
        load_timing_cache=str(cache) if cache is not None and cache.is_file() else None,
    )


def network_profiles(network: Any, profile: OptimizationProfile) -> list[Any]:
    """The Polygraphy profiles for ``network``: ``profile`` for its dynamic input, or, for a network
    without dynamic inputs, its static shapes.

    TensorRT needs every input with a -1 dim covered. Polygraphy would fill an uncovered one with a
    default shape; a profile naming another input, or contradicting a static dim, is refused here instead.
    """
    inputs = {}
    for i in range(int(network.num_inputs)):
        tensor = network.get_input(i)
        inputs[tensor.name] = tuple(int(d) for d in tensor.shape)
    dynamic = {name: shape for name, shape in inputs.items() if any(d < 0 for d in shape)}
    if not dynamic:
        static = polygraphy_trt().Profile()
        for name, shape in inputs.items():
            static.add(name, min=shape, opt=shape, max=shape)
        return [static]
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
    return [polygraphy_profile(profile)]


def _polygraphy_call(loader: Any, what: str) -> Any:
    """Run a Polygraphy loader; its failures (logged by Polygraphy above) become :class:`EngineBuildError`."""
    from polygraphy.exception import PolygraphyException

    try:
        return loader()
    except PolygraphyException as exc:
        raise EngineBuildError(f"{what}: {first_line(exc)} (TensorRT's log above has the details)") from None


def build_serialized_engine(
    trt: ModuleType,
    onnx_path: str | Path,
    precision: str,
    profile: OptimizationProfile,
    *,
    tf32: bool = False,
    workspace_mb: int | None = None,
    builder_optimization_level: int | None = None,
    timing_cache_path: str | Path | None = None,
) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine at ``precision`` through Polygraphy.

    The graph must carry the precision (:func:`graph_precision_for`). The timing cache at
    ``timing_cache_path`` is loaded when present, and Polygraphy merges the new timings into it (under a
    lock file) after a successful build.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (expected one of {', '.join(PRECISIONS)})")
    major, _ = tensorrt_version(trt)
    poly = polygraphy_trt()
    builder, network, parser = _polygraphy_call(
        network_loader(onnx_path, precision, major), f"TensorRT's ONNX parser rejected {onnx_path}"
    )
    config = create_config(
        trt,
        precision,
        network_profiles(network, profile),
        tf32=tf32,
        workspace_mb=workspace_mb,
        builder_optimization_level=builder_optimization_level,
        timing_cache_path=timing_cache_path,
    )
    if timing_cache_path is not None:  # Polygraphy locks the cache file with a sibling .lock file
        Path(timing_cache_path).parent.mkdir(parents=True, exist_ok=True)
    build = poly.EngineBytesFromNetwork(
        (builder, network, parser),
        config=config,
        save_timing_cache=str(timing_cache_path) if timing_cache_path is not None else None,
    )
    serialized = _polygraphy_call(build, f"TensorRT failed to build an engine from {onnx_path}")
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
    precision: str  # what it was built at (a .engine artifact is checked against it)

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


def timing_cache_file(cache_dir: Path, trt_version: str, gpu_name: str, capability: tuple[int, int]) -> Path:
    """The timing cache shared by every build for one TensorRT release (the full version: Polygraphy loads
    a cache with ``ignore_mismatch=False``, so a cache from another patch release would be refused) and
    GPU model."""
    release = re.sub(r"[^0-9.]+", "-", trt_version).strip("-.") or "unknown"
    return cache_dir / f"timing-trt{release}-{_slug(gpu_name)}-sm{capability[0]}{capability[1]}.cache"


def load_or_build_engine(
    onnx_path: str | Path,
    precision: str,
    profile: OptimizationProfile,
    *,
    cache_dir: str | Path | None = None,
    workspace_mb: int | None = None,
    builder_optimization_level: int | None = None,
    tf32: bool = False,
) -> EngineArtifact:
    """The cached engine for these inputs, building (and caching) it first when there is none.

    Builds take seconds to many minutes; a benchmark that re-runs with the same graph, GPU and options
    reuses the engine. The sidecar ``<key>.json`` holds the key fields for people inspecting the cache;
    it is written before the engine so an engine file never exists without it.
    """
    trt = import_tensorrt()
    tensorrt_version(trt)  # refuses a major segbench does not speak
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
        tf32,
        metadata.version("polygraphy"),
    )
    key = cache_key(fields)
    directory = Path(cache_dir) if cache_dir is not None else cache_root() / "tensorrt"
    engine_path = directory / f"{key}.engine"
    artifact = EngineArtifact(
        engine_path, key, False, 0.0, str(trt.__version__), gpu_name, profile.to_dict(), precision
    )
    if engine_path.is_file():
        return artifact
    start = time.perf_counter()
    engine_bytes = build_serialized_engine(
        trt,
        onnx_path,
        precision,
        profile,
        tf32=tf32,
        workspace_mb=workspace_mb,
        builder_optimization_level=builder_optimization_level,
        timing_cache_path=timing_cache_file(directory, str(trt.__version__), gpu_name, capability),
    )
    artifact.build_s = time.perf_counter() - start
    artifact.built = True
    sidecar = {**fields, "onnx_path": str(onnx_path), "build_s": round(artifact.build_s, 3)}
    atomic_write_bytes(directory / f"{key}.json", (json.dumps(sidecar, indent=2) + "\n").encode())
    atomic_write_bytes(engine_path, engine_bytes)
    return artifact
