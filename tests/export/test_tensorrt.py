"""TensorRT engine builds (segbench's side of Polygraphy's loaders) and the engine cache, without TensorRT
or a GPU.

Polygraphy's loader objects are inspected where TensorRT is not needed (Polygraphy imports it lazily); the
engine cache runs with the build seam replaced (``tests/fakes/fake_tensorrt_build.py``). That the seam
drives Polygraphy's loaders correctly is ``test_tensorrt_polygraphy.py``'s one test. Nothing here ran on a
real TensorRT installation.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath, Profile
from polygraphy.exception import PolygraphyException

from segbench.backends.spec import graph_precision_for
from segbench.backends.tensorrt.build import (
    EngineBuildError,
    build_serialized_engine,
    call_loader,
    create_config,
    network_loader,
    network_profiles,
    polygraphy_profile,
)
from segbench.backends.tensorrt.engine_cache import engine_cache_key, load_or_build_engine, timing_cache_file
from segbench.backends.tensorrt.install import (
    INSTALL_HINT,
    POLYGRAPHY_HINT,
    TensorRTUnavailable,
    import_tensorrt,
    tensorrt_version,
)
from segbench.backends.tensorrt.precision import engine_graph_precision, lowers_precision_by_flags
from segbench.backends.tensorrt.profile import OptimizationProfile, profile_from_shapes
from tests.fakes.fake_tensorrt import install_fake_tensorrt, make_fake_tensorrt
from tests.fakes.fake_tensorrt_build import GPU, install_fake_build

# These tests are about exporting and caching: each starts from an empty export cache.
pytestmark = pytest.mark.fresh_export_cache

PROFILE = OptimizationProfile("images", (1, 3, 8, 8), (2, 3, 16, 16), (4, 3, 32, 32))
OTHER_INPUT = OptimizationProfile("pixels", PROFILE.min, PROFILE.opt, PROFILE.max)
FOUR_CHANNELS = OptimizationProfile("images", (1, 4, 8, 8), (1, 4, 8, 8), (1, 4, 8, 8))


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
    trt = install_fake_tensorrt(monkeypatch, "11.1.0")
    assert import_tensorrt() is trt
    install_fake_tensorrt(monkeypatch, "9.3.0")
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
    install_fake_tensorrt(monkeypatch)
    monkeypatch.setitem(sys.modules, "polygraphy.backend", None)
    with pytest.raises(TensorRTUnavailable) as info:
        import_tensorrt()
    assert str(info.value) == POLYGRAPHY_HINT


def test_tensorrt_version_parsing():
    assert tensorrt_version(make_fake_tensorrt("10.8.0.43")) == (10, 8)
    assert tensorrt_version(make_fake_tensorrt("11.0.1")) == (11, 0)
    with pytest.raises(TensorRTUnavailable, match="cannot read"):
        tensorrt_version(types.SimpleNamespace(__version__="dev"))


def test_the_one_precision_rule():
    # The graph carries the precision, except one the runtime lowers from the fp32 graph by a flag.
    assert [graph_precision_for(p) for p in ("fp32", "fp16", "bf16")] == ["fp32", "fp16", "bf16"]
    assert graph_precision_for("bf16", {"bf16"}) == "fp32" and graph_precision_for("fp16", {"bf16"}) == "fp16"


@pytest.mark.parametrize("version", ["10.8.0", "11.1.0"])
def test_tensorrts_side_of_the_rule_on_both_majors(version):
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
    assert {p: engine_graph_precision(p, trt) for p in expected} == expected


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
    cache.write_bytes(b"timings")
    config = create_config(trt, precision, profiles, tf32=True, timing_cache_path=cache)
    assert config.tf32 is True and config.timing_cache_path == str(cache)
    assert config.memory_pool_limits is None and config.builder_optimization_level is None


def test_create_config_refuses_unknown_precisions():
    with pytest.raises(ValueError, match="int8"):
        create_config(make_fake_tensorrt(), "int8", [])


# -- segbench's parts of the build (the stand-in builder runs in test_tensorrt_polygraphy.py only) -------


def network(*inputs):
    """A parsed network as Polygraphy hands it over: only its inputs are read."""
    tensors = [types.SimpleNamespace(name=name, shape=shape) for name, shape in inputs]
    return types.SimpleNamespace(num_inputs=len(tensors), get_input=tensors.__getitem__)


def test_a_dynamic_input_gets_the_profile_and_a_static_network_its_own_shapes():
    (profile,) = network_profiles(network(("images", (-1, 3, -1, -1))), PROFILE)
    assert list(profile) == ["images"] and profile["images"].max == PROFILE.max
    (static,) = network_profiles(network(("images", (1, 3, 16, 16))), PROFILE)
    assert (static["images"].min, static["images"].max) == ((1, 3, 16, 16), (1, 3, 16, 16))


@pytest.mark.parametrize(
    ("inputs", "profile", "message"),
    [
        ([("images", (-1, 3, -1, -1))], OTHER_INPUT, "network's dynamic inputs"),
        ([("images", (-1, 3, -1, -1)), ("scale", (-1,))], PROFILE, "images, scale"),
        ([("images", (-1, 3, -1, -1))], FOUR_CHANNELS, "static dim 3 at axis 1"),
    ],
)
def test_profile_that_does_not_cover_the_network_is_refused(inputs, profile, message):
    # Polygraphy would fill an uncovered input with a default shape; segbench refuses before building.
    with pytest.raises(EngineBuildError, match=message):
        network_profiles(network(*inputs), profile)


def test_polygraphy_failures_are_engine_build_errors():
    def failing():
        raise PolygraphyException("Could not parse ONNX correctly\nmore")

    with pytest.raises(
        EngineBuildError, match=r"^parser rejected x: Could not parse ONNX correctly \(TensorRT"
    ):
        call_loader(failing, "parser rejected x")
    assert call_loader(lambda: "built", "never") == "built"


def test_unknown_precision_is_refused(onnx_file):
    with pytest.raises(ValueError, match="int8"):
        build_serialized_engine(make_fake_tensorrt(), onnx_file, "int8", PROFILE)


# -- engine cache (the build seam replaced) ------------------------------------------------------------


def test_engine_is_built_once_and_reused(monkeypatch, onnx_file, tmp_path):
    _, fake = install_fake_build(monkeypatch)
    cache_dir = tmp_path / "engines"
    first = load_or_build_engine(onnx_file, "fp16", PROFILE, cache_dir=cache_dir, workspace_mb=512)
    assert first.built and first.build_s >= 0 and first.path == cache_dir / f"{first.key}.engine"
    assert first.path.is_file() and first.gpu_name == GPU[0] and first.trt_version == "10.8.0"
    sidecar = json.loads((cache_dir / f"{first.key}.json").read_text())
    assert sidecar["precision"] == "fp16" and sidecar["gpu_name"] == GPU[0] and sidecar["tf32"] is False
    assert sidecar["compute_capability"] == [9, 0] and sidecar["profile"] == PROFILE.to_dict()
    assert sidecar["polygraphy"]  # Polygraphy's config defaults shape the engine too
    # What reached the build: the options, and one timing cache per full release (Polygraphy refuses one
    # from another patch release) and GPU model.
    (call,) = fake.calls
    assert call["onnx_path"] == onnx_file and call["precision"] == "fp16" and call["profile"] == PROFILE
    assert (
        call["workspace_mb"] == 512 and call["tf32"] is False and call["builder_optimization_level"] is None
    )
    assert call["timing_cache_path"] == cache_dir / "timing-trt10.8.0-nvidia-h100-80gb-hbm3-sm90.cache"
    assert (
        timing_cache_file(cache_dir, "10.8.1", GPU[0], (9, 0)).name
        == "timing-trt10.8.1-nvidia-h100-80gb-hbm3-sm90.cache"
    )

    again = load_or_build_engine(onnx_file, "fp16", PROFILE, cache_dir=cache_dir, workspace_mb=512)
    assert not again.built and again.path == first.path and again.build_s == 0.0
    assert len(fake.calls) == 1

    fp32 = load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=cache_dir)
    tf32 = load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=cache_dir, tf32=True)
    assert fp32.built and tf32.built and len({first.key, fp32.key, tf32.key}) == 3
    assert json.loads(tf32.path.read_bytes())["built"] == {"precision": "fp32", "tf32": True}
    names = sorted(p.name for p in cache_dir.iterdir())
    assert not [n for n in names if n.startswith(".")]  # no temporary files left behind
    assert len([n for n in names if n.endswith(".engine")]) == 3


def test_changed_graph_or_external_data_rebuilds(monkeypatch, onnx_file, tmp_path):
    install_fake_build(monkeypatch)
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
    install_fake_build(monkeypatch, fails="TensorRT failed to build an engine")
    cache_dir = tmp_path / "engines"
    with pytest.raises(EngineBuildError):
        load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=cache_dir)
    leftovers = list(cache_dir.iterdir()) if cache_dir.exists() else []
    assert not [p for p in leftovers if p.suffix in (".engine", ".json") or p.name.startswith(".")]


def test_default_cache_dir_is_under_the_segbench_cache(monkeypatch, onnx_file, tmp_path):
    install_fake_build(monkeypatch)
    monkeypatch.setenv("SEGBENCH_CACHE_DIR", str(tmp_path / "root"))
    artifact = load_or_build_engine(onnx_file, "fp32", PROFILE)
    assert artifact.path.parent == tmp_path / "root" / "tensorrt"


def test_engine_cache_needs_a_cuda_gpu(monkeypatch, onnx_file, tmp_path):
    install_fake_tensorrt(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TensorRTUnavailable, match="needs a CUDA GPU"):
        load_or_build_engine(onnx_file, "fp32", PROFILE, cache_dir=tmp_path)


def test_the_fake_build_has_the_seams_signature():
    # Tests replace the seam with the fake; a change to the real signature must show up here.
    import inspect

    from segbench.backends.tensorrt import build
    from tests.fakes.fake_tensorrt_build import FakeBuild

    def shape(function, skip=0):
        return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()][skip:]

    assert shape(FakeBuild.__call__, skip=1) == shape(build.build_serialized_engine)  # skip: self
