"""TensorRT engine builder (through Polygraphy) and cache, without TensorRT or a GPU.

Polygraphy's loader objects are inspected where TensorRT is not needed (Polygraphy imports it lazily);
builds run Polygraphy's loaders against the stand-in ``tensorrt`` module. Nothing here ran on a real
TensorRT installation.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath, Profile

from segbench.export import tensorrt as trt_export
from segbench.export.tensorrt import (
    INSTALL_HINT,
    POLYGRAPHY_HINT,
    EngineBuildError,
    OptimizationProfile,
    TensorRTUnavailable,
    build_serialized_engine,
    create_config,
    engine_cache_key,
    graph_precision_for,
    import_tensorrt,
    load_or_build_engine,
    lowers_precision_by_flags,
    network_loader,
    polygraphy_profile,
    profile_from_shapes,
    tensorrt_version,
    timing_cache_file,
)
from tests.fakes.fake_tensorrt import TIMING_HEADER, calls_named, install_fake_tensorrt, make_fake_tensorrt

GPU = ("NVIDIA H100 80GB HBM3", (9, 0))
PROFILE = OptimizationProfile("images", (1, 3, 8, 8), (2, 3, 16, 16), (4, 3, 32, 32))


def install(monkeypatch, version="10.8.0", **controls):
    trt = install_fake_tensorrt(monkeypatch, version, **controls)
    monkeypatch.setattr(trt_export, "gpu_identity", lambda: GPU)
    return trt


# -- optimization profile --------------------------------------------------------------------------


def test_profile_spans_the_sweep_and_tunes_for_the_heaviest_cell():
    shapes = [(1, 3, 256, 256), (4, 3, 256, 256), (1, 3, 512, 384), (2, 3, 384, 512)]
    profile = profile_from_shapes("images", shapes)
    assert profile.min == (1, 3, 256, 256)
    assert profile.max == (4, 3, 512, 512)
    assert profile.opt == (2, 3, 384, 512)  # 2*384*512 elements beat 4*256*256
    assert profile.to_dict() == {
        "input_name": "images",
        "min": [1, 3, 256, 256],
        "opt": [2, 3, 384, 512],
        "max": [4, 3, 512, 512],
    }


def test_profile_ties_go_to_the_later_shape():
    assert profile_from_shapes("x", [(1, 3, 64, 128), (1, 3, 128, 64)]).opt == (1, 3, 128, 64)
    assert profile_from_shapes("x", [(1, 3, 128, 64), (1, 3, 64, 128)]).opt == (1, 3, 64, 128)


def test_profile_as_onnxruntime_options():
    profile = profile_from_shapes("images", [(1, 3, 256, 256), (8, 3, 512, 512)])
    assert profile.to_ort_options() == {
        "trt_profile_min_shapes": "images:1x3x256x256",
        "trt_profile_opt_shapes": "images:8x3x512x512",
        "trt_profile_max_shapes": "images:8x3x512x512",
    }


def test_profile_rejects_bad_input():
    with pytest.raises(ValueError, match="no input shapes"):
        profile_from_shapes("images", [])
    with pytest.raises(ValueError, match="4 positive ints"):
        profile_from_shapes("images", [(1, 3, 64)])
    with pytest.raises(ValueError, match="min <= opt <= max"):
        OptimizationProfile("images", (1, 3, 64, 64), (1, 3, 32, 32), (1, 3, 64, 64))


# -- cache key --------------------------------------------------------------------------------------

KEY_ARGS = {
    "onnx_digest": "abc",
    "precision": "fp16",
    "profile": PROFILE,
    "trt_version": "10.8.0.43",
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "compute_capability": (9, 0),
    "workspace_mb": None,
    "builder_optimization_level": None,
    "tf32": False,
    "polygraphy_version": "0.53.6",
}
KEY_CHANGES = {
    "onnx_digest": "abd",
    "precision": "bf16",
    "profile": OptimizationProfile("images", (1, 3, 8, 8), (4, 3, 32, 32), (4, 3, 32, 32)),
    "trt_version": "10.9.0.34",
    "gpu_name": "NVIDIA L4",
    "compute_capability": (8, 9),
    "workspace_mb": 1024,
    "builder_optimization_level": 5,
    "tf32": True,
    "polygraphy_version": "0.54.0",
}


def test_engine_key_is_stable():
    again = {**KEY_ARGS, "compute_capability": [9, 0], "profile": OptimizationProfile(**PROFILE.to_dict())}
    assert engine_cache_key(**KEY_ARGS) == engine_cache_key(**again)


@pytest.mark.parametrize("field", sorted(KEY_CHANGES))
def test_engine_key_changes_with_every_field(field):
    assert engine_cache_key(**KEY_ARGS) != engine_cache_key(**{**KEY_ARGS, field: KEY_CHANGES[field]})


# -- import and version -----------------------------------------------------------------------------


def test_import_without_tensorrt_gives_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTUnavailable) as info:
        import_tensorrt()
    assert str(info.value) == INSTALL_HINT
    assert "\n" not in str(info.value) and "pip install 'segbench[trt]'" in str(info.value)


def test_import_returns_the_module_and_refuses_other_majors(monkeypatch):
    trt = install(monkeypatch, "11.1.0")
    assert import_tensorrt() is trt
    install(monkeypatch, "9.3.0")
    with pytest.raises(TensorRTUnavailable, match=r"TensorRT 9\.3\.0 is not supported.*10 or 11"):
        import_tensorrt()


def test_type_stubs_alone_are_not_tensorrt(monkeypatch):
    # tensorrt-stubs installs a tensorrt/ directory of .pyi files: importable as an empty namespace package.
    stubs_only = types.ModuleType("tensorrt")
    stubs_only.__file__ = None
    monkeypatch.setitem(sys.modules, "tensorrt", stubs_only)
    with pytest.raises(TensorRTUnavailable) as info:
        import_tensorrt()
    assert str(info.value) == INSTALL_HINT


def test_import_without_polygraphy_gives_the_install_line(monkeypatch):
    install(monkeypatch)
    monkeypatch.setitem(sys.modules, "polygraphy.backend", None)
    with pytest.raises(TensorRTUnavailable) as info:
        import_tensorrt()
    assert str(info.value) == POLYGRAPHY_HINT


def test_tensorrt_version_parsing():
    assert tensorrt_version(make_fake_tensorrt("10.8.0.43")) == (10, 8)
    assert tensorrt_version(make_fake_tensorrt("11.0.1")) == (11, 0)
    with pytest.raises(TensorRTUnavailable, match="cannot read"):
        tensorrt_version(types.SimpleNamespace(__version__="dev"))


@pytest.mark.parametrize("version", ["10.8.0", "11.1.0"])
def test_one_precision_rule_for_both_majors(version):
    trt = make_fake_tensorrt(version)
    major = tensorrt_version(trt)[0]
    # The graph carries fp32 and fp16 on both majors (strongly typed, the fp16 keep-list obeyed); only
    # bf16 on 10 is lowered from the fp32 graph by the BF16 flag. 11 needs a bf16 graph for bf16.
    assert [lowers_precision_by_flags(major, p) for p in ("fp32", "fp16", "bf16")] == [
        False,
        False,
        major == 10,
    ]
    expected = {"fp32": "fp32", "fp16": "fp16", "bf16": "fp32" if major == 10 else "bf16"}
    assert {p: graph_precision_for(p, trt) for p in expected} == expected


# -- Polygraphy's loader objects (no TensorRT needed to make them) ------------------------------------


def test_network_loader_is_strongly_typed_except_bf16_on_10(onnx_file):
    for major, precision, strongly in [(10, "fp16", True), (10, "fp32", True), (11, "fp16", True),
                                       (10, "bf16", False), (11, "bf16", True)]:  # fmt: skip
        loader = network_loader(onnx_file, precision, major)
        assert isinstance(loader, NetworkFromOnnxPath)
        assert loader.path == str(onnx_file) and loader.strongly_typed is strongly


def test_profile_becomes_a_polygraphy_profile():
    profile = polygraphy_profile(PROFILE)
    assert isinstance(profile, Profile) and list(profile) == ["images"]
    assert (profile["images"].min, profile["images"].opt, profile["images"].max) == (
        PROFILE.min,
        PROFILE.opt,
        PROFILE.max,
    )


@pytest.mark.parametrize(
    ("version", "precision", "bf16"),
    [
        ("10.8.0", "fp16", False),
        ("10.8.0", "bf16", True),
        ("11.1.0", "fp16", False),
        ("11.1.0", "fp32", False),
    ],
)
def test_create_config_arguments(version, precision, bf16, tmp_path):
    trt = make_fake_tensorrt(version)
    profiles = [polygraphy_profile(PROFILE)]
    cache = tmp_path / "timing.cache"
    config = create_config(trt, precision, profiles, workspace_mb=512, builder_optimization_level=5,
                           timing_cache_path=cache)  # fmt: skip
    assert isinstance(config, CreateConfig)
    assert config.profiles == profiles
    assert config.tf32 is False and config.fp16 is False and config.bf16 is bf16  # never the FP16 flag
    assert config.memory_pool_limits == {trt.MemoryPoolType.WORKSPACE: 512 << 20}
    assert config.builder_optimization_level == 5
    assert config.timing_cache_path is None  # no file yet: nothing to load
    cache.write_bytes(TIMING_HEADER)
    config = create_config(trt, precision, profiles, tf32=True, timing_cache_path=cache)
    assert config.tf32 is True and config.timing_cache_path == str(cache)
    assert config.memory_pool_limits is None and config.builder_optimization_level is None


def test_create_config_refuses_unknown_precisions():
    with pytest.raises(ValueError, match="int8"):
        create_config(make_fake_tensorrt(), "int8", [])


# -- builds through Polygraphy against the stand-in module ----------------------------------------------


def built_spec(engine_bytes: bytes) -> dict:
    return json.loads(engine_bytes)


@pytest.mark.parametrize("version", ["10.8.0", "11.1.0"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fp32_and_fp16_are_strongly_typed_without_precision_flags(monkeypatch, onnx_file, version, precision):
    trt = install(monkeypatch, version)
    spec = built_spec(build_serialized_engine(trt, onnx_file, precision, PROFILE))
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert calls_named(trt, "create_network") == [(strongly,)]
    assert calls_named(trt, "parse_from_file") == [(str(onnx_file),)]
    assert calls_named(trt, "set_shape") == [("images", PROFILE.min, PROFILE.opt, PROFILE.max)]
    assert calls_named(trt, "set_flag") == []
    # TensorRT enables TF32 by default; Polygraphy's CreateConfig(tf32=False) clears it.
    assert calls_named(trt, "clear_flag") == [(trt.BuilderFlag.TF32,)]
    assert spec["strongly_typed"] is True and spec["flags"] == []


def test_tf32_only_when_asked_for(monkeypatch, onnx_file):
    trt = install(monkeypatch)
    spec = built_spec(build_serialized_engine(trt, onnx_file, "fp32", PROFILE, tf32=True))
    assert spec["flags"] == ["TF32"] and calls_named(trt, "clear_flag") == []


def test_bf16_on_10_is_the_bf16_flag_on_a_weakly_typed_network(monkeypatch, onnx_file):
    trt = install(monkeypatch, "10.8.0")
    spec = built_spec(build_serialized_engine(trt, onnx_file, "bf16", PROFILE))
    assert calls_named(trt, "create_network") == [(0,)]
    assert spec["flags"] == ["BF16"] and spec["strongly_typed"] is False


def test_workspace_and_optimization_level(monkeypatch, onnx_file):
    trt = install(monkeypatch)
    build_serialized_engine(trt, onnx_file, "fp32", PROFILE, workspace_mb=512, builder_optimization_level=5)
    assert calls_named(trt, "set_memory_pool_limit") == [(trt.MemoryPoolType.WORKSPACE, 512 << 20)]
    assert calls_named(trt, "builder_optimization_level") == [(5,)]
    trt = install(monkeypatch)
    build_serialized_engine(trt, onnx_file, "fp32", PROFILE)
    assert calls_named(trt, "set_memory_pool_limit") == []
    assert calls_named(trt, "builder_optimization_level") == []


def test_static_network_gets_its_own_shapes(monkeypatch, onnx_file):
    trt = install(monkeypatch, input_shape=(1, 3, 16, 16))
    spec = built_spec(build_serialized_engine(trt, onnx_file, "fp32", PROFILE))
    assert spec["profile"] == {"images": [[1, 3, 16, 16]] * 3}


@pytest.mark.parametrize(
    ("profile", "controls", "message"),
    [
        (
            OptimizationProfile("pixels", PROFILE.min, PROFILE.opt, PROFILE.max),
            {},
            "network's dynamic inputs",
        ),
        (PROFILE, {"extra_input": ("scale", (-1,))}, "images, scale"),
        (
            OptimizationProfile("images", (1, 4, 8, 8), (1, 4, 8, 8), (1, 4, 8, 8)),
            {},
            "static dim 3 at axis 1",
        ),
    ],
)
def test_profile_that_does_not_cover_the_network_is_refused(
    monkeypatch, onnx_file, profile, controls, message
):
    # Polygraphy would fill an uncovered input with a default shape; segbench refuses before building.
    trt = install(monkeypatch, **controls)
    with pytest.raises(EngineBuildError, match=message):
        build_serialized_engine(trt, onnx_file, "fp32", profile)
    assert calls_named(trt, "build_serialized_network") == []


def test_parser_and_build_failures_are_engine_build_errors(monkeypatch, onnx_file, tmp_path):
    trt = install(monkeypatch, parse_errors=["No importer registered for op: Unique"])
    with pytest.raises(EngineBuildError, match=r"ONNX parser rejected .*Could not parse ONNX correctly"):
        build_serialized_engine(trt, onnx_file, "fp32", PROFILE)
    trt = install(monkeypatch)
    with pytest.raises(EngineBuildError, match="ONNX parser rejected"):
        build_serialized_engine(trt, tmp_path / "missing.onnx", "fp32", PROFILE)
    trt = install(monkeypatch, build_fails=True)
    with pytest.raises(EngineBuildError, match="failed to build an engine"):
        build_serialized_engine(trt, onnx_file, "fp32", PROFILE)


def test_unknown_precision_is_refused(onnx_file):
    with pytest.raises(ValueError, match="int8"):
        build_serialized_engine(make_fake_tensorrt(), onnx_file, "int8", PROFILE)


def test_timing_cache_is_read_and_merged_back(monkeypatch, onnx_file, tmp_path):
    cache = tmp_path / "timing.cache"
    trt = install(monkeypatch)
    build_serialized_engine(trt, onnx_file, "fp32", PROFILE, timing_cache_path=cache)
    assert calls_named(trt, "set_timing_cache") == [(False,)]  # a cache from another build is refused
    first = cache.read_bytes()
    assert first == TIMING_HEADER + b"timings of build 1\n"

    trt = install(monkeypatch)
    build_serialized_engine(trt, onnx_file, "fp16", PROFILE, timing_cache_path=cache)
    assert calls_named(trt, "create_timing_cache")[0] == (first,)  # the earlier timings were loaded
    assert cache.read_bytes() == first + b"timings of build 2\n"


# -- engine cache -----------------------------------------------------------------------------------


def test_engine_is_built_once_and_reused(monkeypatch, onnx_file, tmp_path):
    trt = install(monkeypatch)
    cache_dir = tmp_path / "engines"
    first = load_or_build_engine(onnx_file, "fp16", PROFILE, cache_dir=cache_dir)
    assert first.built and first.build_s >= 0 and first.path == cache_dir / f"{first.key}.engine"
    assert first.path.is_file() and first.gpu_name == GPU[0] and first.trt_version == "10.8.0"
    sidecar = json.loads((cache_dir / f"{first.key}.json").read_text())
    assert sidecar["precision"] == "fp16" and sidecar["gpu_name"] == GPU[0] and sidecar["tf32"] is False
    assert sidecar["compute_capability"] == [9, 0] and sidecar["profile"] == PROFILE.to_dict()
    assert sidecar["polygraphy"]  # Polygraphy's config defaults shape the engine too
    # The timing cache is per full release: Polygraphy refuses one from another patch release.
    assert (cache_dir / "timing-trt10.8.0-nvidia-h100-80gb-hbm3-sm90.cache").is_file()
    assert (
        timing_cache_file(cache_dir, "10.8.1", GPU[0], (9, 0)).name
        == "timing-trt10.8.1-nvidia-h100-80gb-hbm3-sm90.cache"
    )

    again = load_or_build_engine(onnx_file, "fp16", PROFILE, cache_dir=cache_dir)
    assert not again.built and again.path == first.path and again.build_s == 0.0
    assert len(calls_named(trt, "build_serialized_network")) == 1

    fp32 = load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=cache_dir)
    tf32 = load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=cache_dir, tf32=True)
    assert fp32.built and tf32.built and len({first.key, fp32.key, tf32.key}) == 3
    assert json.loads(tf32.path.read_bytes())["flags"] == ["TF32"]
    names = sorted(p.name for p in cache_dir.iterdir())
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind
    assert len([n for n in names if n.endswith(".engine")]) == 3


def test_changed_graph_or_external_data_rebuilds(monkeypatch, onnx_file, tmp_path):
    install(monkeypatch)
    keys = {load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=tmp_path / "c").key}
    data = onnx_file.parent / (onnx_file.name + ".data")
    data.write_bytes(b"weights v1")
    keys.add(load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=tmp_path / "c").key)
    data.write_bytes(b"weights v2")
    keys.add(load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=tmp_path / "c").key)
    onnx_file.write_bytes(b"another graph")
    keys.add(load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=tmp_path / "c").key)
    assert len(keys) == 4


def test_failed_build_leaves_no_engine(monkeypatch, onnx_file, tmp_path):
    install(monkeypatch, build_fails=True)
    cache_dir = tmp_path / "engines"
    with pytest.raises(EngineBuildError):
        load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=cache_dir)
    leftovers = list(cache_dir.iterdir()) if cache_dir.exists() else []
    assert not [p for p in leftovers if p.suffix in (".engine", ".json") or p.name.startswith(".")]


def test_default_cache_dir_is_under_the_segbench_cache(monkeypatch, onnx_file, tmp_path):
    install(monkeypatch)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / "root"))
    artifact = load_or_build_engine(onnx_file, "fp32", PROFILE)
    assert artifact.path.parent == tmp_path / "root" / "tensorrt"


def test_engine_cache_needs_a_cuda_gpu(monkeypatch, onnx_file, tmp_path):
    install_fake_tensorrt(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TensorRTUnavailable, match="needs a CUDA GPU"):
        load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=tmp_path)
