"""The engine cache: an engine built once per graph, precision, profile, GPU and TensorRT build, on disk.

Engines are keyed by everything that decides their bytes (ONNX digest, precision, TF32, profile, TensorRT
and Polygraphy versions, GPU name and compute capability, workspace, optimization level) and written
atomically, so a killed build never leaves an engine a later run trusts. Builds go through the one seam,
:func:`segbench.backends.tensorrt.build.build_serialized_engine`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from segbench.backends.tensorrt import build  # called as build.X, so tests can replace the seam
from segbench.backends.tensorrt.install import TensorRTUnavailable, import_tensorrt
from segbench.backends.tensorrt.profile import OptimizationProfile
from segbench.cache_dir import cache_key, cache_root
from segbench.export.cache import file_digest
from segbench.files import atomic_write_bytes


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
    trt = import_tensorrt()  # refuses a major segbench does not speak
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
    engine_bytes = build.build_serialized_engine(
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
