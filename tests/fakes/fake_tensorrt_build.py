"""A fake at segbench's own build seam, ``segbench.backends.tensorrt.build.build_serialized_engine``.

Tests of what sits around a build (the engine cache, ``segbench export``, the runner) replace the seam with
:class:`FakeBuild` instead of faking Polygraphy or TensorRT's builder: it records each call's arguments and
returns engine bytes the runtime fake (``fake_tensorrt.py``) loads. That segbench's real build drives
Polygraphy's loaders correctly is one test's concern (``tests/export/test_tensorrt_polygraphy.py``).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from segbench.backends.tensorrt import build, engine_cache
from segbench.backends.tensorrt.build import EngineBuildError
from segbench.backends.tensorrt.profile import OptimizationProfile
from tests.fakes.fake_tensorrt import FakeNetwork, install_fake_tensorrt

GPU = ("NVIDIA H100 80GB HBM3", (9, 0))


class FakeBuild:
    """Stands in for ``build_serialized_engine`` (same signature); ``fails`` makes every build fail."""

    def __init__(self, network: FakeNetwork | None = None, fails: str | None = None) -> None:
        self.network = network or FakeNetwork()
        self.fails = fails
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self,
        trt: types.ModuleType,
        onnx_path: str | Path,
        precision: str,
        profile: OptimizationProfile,
        *,
        tf32: bool = False,
        workspace_mb: int | None = None,
        builder_optimization_level: int | None = None,
        timing_cache_path: str | Path | None = None,
    ) -> bytes:
        call = {"onnx_path": Path(onnx_path), "precision": precision, "profile": profile, "tf32": tf32,
                "workspace_mb": workspace_mb, "builder_optimization_level": builder_optimization_level,
                "timing_cache_path": timing_cache_path}  # fmt: skip
        self.calls.append(call)
        if self.fails is not None:
            raise EngineBuildError(self.fails)
        return self.network.engine_bytes(trt.__version__, profile, precision=precision, tf32=tf32)


def install_fake_build(
    monkeypatch: Any, version: str = "10.8.0", fails: str | None = None, **network: Any
) -> tuple[types.ModuleType, FakeBuild]:
    """The runtime fake as ``tensorrt``, :class:`FakeBuild` as the build seam and a GPU identity, for one
    test; returns both fakes."""
    trt = install_fake_tensorrt(monkeypatch, version)
    fake = FakeBuild(FakeNetwork(**network), fails)
    monkeypatch.setattr(build, "build_serialized_engine", fake)
    monkeypatch.setattr(engine_cache, "gpu_identity", lambda: GPU)
    return trt, fake


def fake_engine_bytes(trt: types.ModuleType, profile: OptimizationProfile, **network: Any) -> bytes:
    """Engine bytes for ``trt``'s version, as a fake build of ``profile`` would give."""
    return FakeBuild(FakeNetwork(**network))(trt, "model.onnx", "fp32", profile)
