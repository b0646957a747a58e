"""TensorRT engine builder and cache, against the stand-in ``tensorrt`` module (no GPU needed).

The fake checks every call against the documented TensorRT 10 / 11 Python API; nothing here ran on a
real TensorRT installation.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from segbench.export import tensorrt as trt_export
from segbench.export.tensorrt import (
    INSTALL_HINT,
    EngineBuildError,
    OptimizationProfile,
    TensorRTUnavailable,
    build_serialized_engine,
    engine_cache_key,
    graph_precision_for,
    import_tensorrt,
    load_or_build_engine,
    lowers_precision_by_flags,
    profile_from_shapes,
    tensorrt_version,
)
from tests.fakes.fake_tensorrt import TIMING_HEADER, FakeControls, calls_named, make_fake_tensorrt

GPU = ("NVIDIA H100 80GB HBM3", (9, 0))
PROFILE = OptimizationProfile("images", (1, 3, 8, 8), (2, 3, 16, 16), (4, 3, 32, 32))


def install(monkeypatch, version="10.8.0", **controls):
    trt = make_fake_tensorrt(version, FakeControls(**controls))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
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


def test_tensorrt_version_parsing():
    assert tensorrt_version(make_fake_tensorrt("10.8.0.43")) == (10, 8)
    assert tensorrt_version(make_fake_tensorrt("11.0.1")) == (11, 0)
    with pytest.raises(TensorRTUnavailable, match="cannot read"):
        tensorrt_version(types.SimpleNamespace(__version__="dev"))


@pytest.mark.parametrize(("version", "by_flags"), [("10.8.0", True), ("11.1.0", False)])
def test_one_precision_rule_per_major(version, by_flags):
    trt = make_fake_tensorrt(version)
    assert lowers_precision_by_flags(tensorrt_version(trt)[0]) is by_flags
    # 10 lowers the fp32 graph by flags; 11 is strongly typed and needs the graph at the precision.
    expected = {p: "fp32" if by_flags else p for p in ("fp32", "fp16", "bf16")}
    assert {p: graph_precision_for(p, trt) for p in expected} == expected


# -- builder ----------------------------------------------------------------------------------------


def built_spec(engine_bytes: bytes) -> dict:
    return json.loads(engine_bytes)


def test_fp16_on_trt10_uses_a_weakly_typed_network_and_the_fp16_flag(onnx_file):
    trt = make_fake_tensorrt("10.8.0")
    engine = build_serialized_engine(trt, onnx_file, "fp16", PROFILE)
    assert isinstance(engine, bytes)
    assert calls_named(trt, "create_network") == [(0,)]
    assert calls_named(trt, "set_flag") == [(trt.BuilderFlag.FP16,)]
    assert calls_named(trt, "parse_from_file") == [(str(onnx_file),)]
    assert calls_named(trt, "set_shape") == [("images", PROFILE.min, PROFILE.opt, PROFILE.max)]
    spec = built_spec(engine)
    assert spec["flags"] == ["FP16"] and spec["strongly_typed"] is False


@pytest.mark.parametrize(("precision", "flags"), [("fp32", []), ("bf16", ["BF16"])])
def test_other_precisions_on_trt10(onnx_file, precision, flags):
    trt = make_fake_tensorrt("10.8.0")
    spec = built_spec(build_serialized_engine(trt, onnx_file, precision, PROFILE))
    assert calls_named(trt, "create_network") == [(0,)]
    assert spec["flags"] == flags


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_trt11_is_strongly_typed_and_never_sets_precision_flags(onnx_file, precision):
    trt = make_fake_tensorrt("11.1.0")
    assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.BuilderFlag, "BF16")
    spec = built_spec(build_serialized_engine(trt, onnx_file, precision, PROFILE))
    assert calls_named(trt, "create_network") == [
        (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED),)
    ]
    assert calls_named(trt, "set_flag") == []
    assert spec["strongly_typed"] is True and spec["flags"] == []


def test_workspace_and_optimization_level(onnx_file):
    trt = make_fake_tensorrt("10.8.0")
    build_serialized_engine(trt, onnx_file, "fp32", PROFILE, workspace_mb=512, builder_optimization_level=5)
    assert calls_named(trt, "set_memory_pool_limit") == [(trt.MemoryPoolType.WORKSPACE, 512 << 20)]
    assert calls_named(trt, "builder_optimization_level") == [(5,)]
    trt = make_fake_tensorrt("10.8.0")
    build_serialized_engine(trt, onnx_file, "fp32", PROFILE)
    assert calls_named(trt, "set_memory_pool_limit") == []
    assert calls_named(trt, "builder_optimization_level") == []


def test_profile_is_added_for_the_dynamic_input(onnx_file):
    trt = make_fake_tensorrt("10.8.0")
    spec = built_spec(build_serialized_engine(trt, onnx_file, "fp32", PROFILE))
    assert len(calls_named(trt, "add_optimization_profile")) == 1
    assert spec["profile"] == {"images": [list(PROFILE.min), list(PROFILE.opt), list(PROFILE.max)]}


def test_static_network_needs_no_profile(onnx_file):
    trt = make_fake_tensorrt("10.8.0", FakeControls(input_shape=(1, 3, 16, 16)))
    spec = built_spec(build_serialized_engine(trt, onnx_file, "fp32", PROFILE))
    assert calls_named(trt, "add_optimization_profile") == [] and spec["profile"] == {}


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
def test_profile_that_does_not_cover_the_network_is_refused(onnx_file, profile, controls, message):
    trt = make_fake_tensorrt("10.8.0", FakeControls(**controls))
    with pytest.raises(EngineBuildError, match=message):
        build_serialized_engine(trt, onnx_file, "fp32", profile)
    assert calls_named(trt, "build_serialized_network") == []


def test_parser_errors_are_reported(onnx_file, tmp_path):
    trt = make_fake_tensorrt("10.8.0", FakeControls(parse_errors=["No importer registered for op: Unique"]))
    with pytest.raises(EngineBuildError, match="No importer registered for op: Unique"):
        build_serialized_engine(trt, onnx_file, "fp32", PROFILE)
    with pytest.raises(EngineBuildError, match="Failed to open file"):
        build_serialized_engine(make_fake_tensorrt(), tmp_path / "missing.onnx", "fp32", PROFILE)


def test_failed_build_raises(onnx_file):
    trt = make_fake_tensorrt("10.8.0", FakeControls(build_fails=True))
    with pytest.raises(EngineBuildError, match="failed to build"):
        build_serialized_engine(trt, onnx_file, "fp32", PROFILE)


def test_unknown_precision_is_refused(onnx_file):
    with pytest.raises(ValueError, match="int8"):
        build_serialized_engine(make_fake_tensorrt(), onnx_file, "int8", PROFILE)


def test_timing_cache_is_read_and_written_back(onnx_file, tmp_path):
    cache = tmp_path / "timing.cache"
    trt = make_fake_tensorrt("10.8.0")
    build_serialized_engine(trt, onnx_file, "fp32", PROFILE, timing_cache_path=cache)
    assert calls_named(trt, "create_timing_cache") == [(b"",)]
    assert calls_named(trt, "set_timing_cache") == [(False,)]
    first = cache.read_bytes()
    assert first == TIMING_HEADER + b"timings of build 1\n"

    trt = make_fake_tensorrt("10.8.0")
    build_serialized_engine(trt, onnx_file, "fp16", PROFILE, timing_cache_path=cache)
    assert calls_named(trt, "create_timing_cache") == [(first,)]  # the earlier timings were loaded
    assert cache.read_bytes() == first + b"timings of build 2\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unreadable_timing_cache_starts_afresh(onnx_file, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"garbage")
    trt = make_fake_tensorrt("10.8.0")
    build_serialized_engine(trt, onnx_file, "fp32", PROFILE, timing_cache_path=cache)
    assert calls_named(trt, "create_timing_cache") == [(b"garbage",), (b"",)]
    assert cache.read_bytes() == TIMING_HEADER + b"timings of build 1\n"


# -- engine cache -----------------------------------------------------------------------------------


def test_engine_is_built_once_and_reused(monkeypatch, onnx_file, tmp_path):
    trt = install(monkeypatch)
    cache_dir = tmp_path / "engines"
    first = load_or_build_engine(onnx_file, "fp16", PROFILE, cache_dir=cache_dir)
    assert first.built and first.build_s >= 0 and first.path == cache_dir / f"{first.key}.engine"
    assert first.path.is_file() and first.gpu_name == GPU[0] and first.trt_version == "10.8.0"
    sidecar = json.loads((cache_dir / f"{first.key}.json").read_text())
    assert sidecar["precision"] == "fp16" and sidecar["gpu_name"] == GPU[0]
    assert sidecar["compute_capability"] == [9, 0] and sidecar["profile"] == PROFILE.to_dict()
    assert (cache_dir / "timing-trt10.8-nvidia-h100-80gb-hbm3-sm90.cache").is_file()

    again = load_or_build_engine(onnx_file, "fp16", PROFILE, cache_dir=cache_dir)
    assert not again.built and again.path == first.path and again.build_s == 0.0
    assert len(calls_named(trt, "build_serialized_network")) == 1

    fp32 = load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=cache_dir)
    assert fp32.built and fp32.key != first.key
    assert len(calls_named(trt, "build_serialized_network")) == 2
    names = sorted(p.name for p in cache_dir.iterdir())
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind
    assert len([n for n in names if n.endswith(".engine")]) == 2


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
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TensorRTUnavailable, match="needs a CUDA GPU"):
        load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=tmp_path)
