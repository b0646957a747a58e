"""Engine builds, through NVIDIA's Polygraphy: the loaders, kept apart from the runner.

:func:`build_serialized_engine` is segbench's one build seam (an ONNX file and a profile in, engine bytes
out); Polygraphy's loaders do the TensorRT calls: ``NetworkFromOnnxPath`` (strongly typed unless the
precision is lowered by a flag, see :mod:`.precision`), ``CreateConfig`` (the profile, the timing cache,
workspace limit, builder optimization level, TF32) and ``EngineBytesFromNetwork`` (build, then merge the
new timings into the timing cache file). segbench keeps what Polygraphy does not know: the profile from
the sweep shapes, the check that it covers the network's dynamic inputs, and the precision rule. TF32
(on by default in TensorRT) is cleared unless asked for, so an fp32 engine computes in fp32.

Nothing here has run against a real TensorRT installation (see ``shared/notes/tensorrt.md``). One test
drives these loaders against a minimal stand-in ``tensorrt`` (``tests/export/test_tensorrt_polygraphy.py``);
the others replace :func:`build_serialized_engine` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from segbench.backends.tensorrt.install import polygraphy_trt, tensorrt_version
from segbench.backends.tensorrt.precision import PRECISIONS, lowers_precision_by_flags
from segbench.backends.tensorrt.profile import OptimizationProfile
from segbench.errors import first_line


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX graph or build an engine from it."""


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (expected one of {', '.join(PRECISIONS)})")


def trt_logger() -> Any:
    """Polygraphy's TensorRT logger. The runtime logs to it too: TensorRT warns when a builder and a
    runtime in one process are given different loggers."""
    polygraphy_trt()  # Polygraphy's log level first
    from polygraphy.backend.trt import util as poly_trt_util

    return poly_trt_util.get_trt_logger()


def network_loader(onnx_path: str | Path, precision: str, major: int) -> Any:
    """Polygraphy's ``NetworkFromOnnxPath`` for the graph: strongly typed unless ``precision`` is lowered
    by flags. It parses with ``parse_from_file``, so external-data weights next to the graph are found."""
    return polygraphy_trt().NetworkFromOnnxPath(
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
    clears it, so fp32 layers (an fp32 engine, the fp16 graph's keep-list) compute in fp32. A precision
    flag is set only for a precision the rule lowers by flags (bf16 on TensorRT 10).
    """
    _check_precision(precision)
    major, _ = tensorrt_version(trt)
    lowered = lowers_precision_by_flags(major, precision)
    cache = Path(timing_cache_path) if timing_cache_path is not None else None
    return polygraphy_trt().CreateConfig(
        profiles=list(profiles),
        tf32=bool(tf32),
        fp16=lowered and precision == "fp16",
        bf16=lowered and precision == "bf16",
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


def call_loader(loader: Any, what: str) -> Any:
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

    The graph must carry the precision (:func:`.precision.engine_graph_precision`). The timing cache at
    ``timing_cache_path`` is loaded when present, and Polygraphy merges the new timings into it (under a
    lock file) after a successful build.
    """
    _check_precision(precision)
    major, _ = tensorrt_version(trt)
    builder, network, parser = call_loader(
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
    build = polygraphy_trt().EngineBytesFromNetwork(
        (builder, network, parser),
        config=config,
        save_timing_cache=str(timing_cache_path) if timing_cache_path is not None else None,
    )
    return bytes(call_loader(build, f"TensorRT failed to build an engine from {onnx_path}"))
