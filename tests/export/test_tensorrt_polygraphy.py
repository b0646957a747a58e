"""The one contract test of segbench's build against Polygraphy's own loaders, on a minimal TensorRT
stand-in (``tests/fakes/fake_tensorrt_builder.py``).

Every other test replaces segbench's build seam (``build_serialized_engine``); this one shows that the
seam's choices reach TensorRT through ``NetworkFromOnnxPath``, ``CreateConfig`` and
``EngineBytesFromNetwork``. Polygraphy's internals are Polygraphy's concern.
"""

from __future__ import annotations

import json

from segbench.backends.tensorrt.build import build_serialized_engine
from segbench.backends.tensorrt.profile import OptimizationProfile
from tests.fakes.fake_tensorrt import calls_named
from tests.fakes.fake_tensorrt_builder import (
    TIMING_HEADER,
    install_for_polygraphy,
    make_fake_tensorrt_builder,
)

PROFILE = OptimizationProfile("images", (1, 3, 8, 8), (2, 3, 16, 16), (4, 3, 32, 32))


def test_build_drives_polygraphys_loaders(monkeypatch, onnx_file, tmp_path):
    cache = tmp_path / "timings" / "timing.cache"
    trt = make_fake_tensorrt_builder("10.8.0")
    install_for_polygraphy(monkeypatch, trt)
    options = {"workspace_mb": 512, "builder_optimization_level": 5, "timing_cache_path": cache}
    built = json.loads(build_serialized_engine(trt, onnx_file, "fp16", PROFILE, **options))
    # fp16: a strongly typed network from the graph, no precision flag, TF32 (TensorRT's default) cleared.
    assert calls_named(trt, "create_network") == [
        (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED),)
    ]
    assert calls_named(trt, "parse_from_file") == [(str(onnx_file),)]
    assert calls_named(trt, "set_shape") == [("images", PROFILE.min, PROFILE.opt, PROFILE.max)]
    assert calls_named(trt, "set_flag") == [] and calls_named(trt, "clear_flag") == [(trt.BuilderFlag.TF32,)]
    assert calls_named(trt, "set_memory_pool_limit") == [(trt.MemoryPoolType.WORKSPACE, 512 << 20)]
    assert calls_named(trt, "builder_optimization_level") == [(5,)]
    assert built["built"] == {"flags": [], "strongly_typed": True}
    # The timing cache is made empty, refused on a mismatch, and merged back into the file after the build.
    assert calls_named(trt, "set_timing_cache") == [(False,)]
    assert cache.read_bytes() == TIMING_HEADER + b"timings of build 1\n"

    # bf16 on TensorRT 10: the one precision lowered by a flag, on a weakly typed network; the timing
    # cache written above is loaded, and this build's timings merged into it.
    trt = make_fake_tensorrt_builder("10.8.0")
    install_for_polygraphy(monkeypatch, trt)
    built = json.loads(
        build_serialized_engine(trt, onnx_file, "bf16", PROFILE, tf32=True, timing_cache_path=cache)
    )
    assert calls_named(trt, "create_network") == [(0,)]
    assert calls_named(trt, "set_flag") == [(trt.BuilderFlag.TF32,), (trt.BuilderFlag.BF16,)]
    assert calls_named(trt, "clear_flag") == []  # TF32 asked for: kept
    assert built["built"] == {"flags": ["BF16", "TF32"], "strongly_typed": False}
    assert calls_named(trt, "create_timing_cache")[0] == (TIMING_HEADER + b"timings of build 1\n",)
    assert cache.read_bytes() == TIMING_HEADER + b"timings of build 1\ntimings of build 2\n"
