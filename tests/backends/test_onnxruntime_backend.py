"""onnxruntime backend: provider options from the YAML, fp16 graphs, the active provider recorded."""

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from segbench.backends.onnxruntime_backend import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    TENSORRT_PROVIDER,
    OnnxRuntimeConfig,
    OnnxRuntimeRunner,
    partition_ops,
    provider_options,
    requested_providers,
    tensorrt_precision_flag,
)
from segbench.models import build_model
from tests.fakes.configs import TINY_UNET

SHAPES = [(1, 3, 256, 256), (4, 3, 256, 256), (1, 3, 512, 512), (4, 3, 512, 512)]


def test_tensorrt_provider_options_come_from_the_config_and_the_cells(tmp_path):
    config = OnnxRuntimeConfig(
        device="cuda",
        tensorrt=True,
        trt_workspace_mb=1024,
        cuda_options={"cudnn_conv_algo_search": "EXHAUSTIVE"},
        tensorrt_options={"trt_builder_optimization_level": 5, "trt_timing_cache_enable": False},
    )
    assert requested_providers(config) == [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]
    trt, cuda, cpu = provider_options(config, "images", SHAPES, cache_dir=tmp_path)
    assert trt["trt_profile_min_shapes"] == "images:1x3x256x256"
    assert trt["trt_profile_opt_shapes"] == "images:4x3x512x512"
    assert trt["trt_profile_max_shapes"] == "images:4x3x512x512"
    assert trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "onnxruntime-tensorrt")  # no graph: the root
    assert trt["trt_max_workspace_size"] == str(1024 << 20)
    # Options given in the YAML win over the derived ones and pass through.
    assert trt["trt_timing_cache_enable"] == "False" and trt["trt_builder_optimization_level"] == "5"
    assert cuda == {"use_tf32": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"} and cpu == {}
    assert "trt_fp16_enable" not in trt  # an fp32 graph


def test_tf32_is_off_in_the_cuda_provider_unless_asked_and_the_yaml_wins():
    cuda = provider_options(OnnxRuntimeConfig(device="cuda"), "images", SHAPES)[0]
    assert cuda == {"use_tf32": "0"}  # onnxruntime's own default is 1
    for precision in ("fp32", "fp16"):  # an fp16 graph's fp32 keep-list stays fp32 too
        assert (
            provider_options(OnnxRuntimeConfig(device="cuda"), "images", SHAPES, precision=precision)[0][
                "use_tf32"
            ]
            == "0"
        )
    assert provider_options(OnnxRuntimeConfig(device="cuda", tf32=True), "images", SHAPES)[0] == {
        "use_tf32": "1"
    }
    explicit = OnnxRuntimeConfig(device="cuda", cuda_options={"use_tf32": 1})
    assert provider_options(explicit, "images", SHAPES)[0] == {"use_tf32": "1"}
    with pytest.raises(ValidationError, match="need device: cuda"):
        OnnxRuntimeConfig(tf32=True)


def test_an_fp16_graph_turns_on_fp16_kernels_only_where_the_network_is_weakly_typed():
    """Before onnxruntime 1.22 the provider's network is weakly typed: an fp16 graph needs the flag or
    runs in fp32. From 1.22 on it is strongly typed only while the flag is off, and the flag would let
    TensorRT lower the fp16 graph's fp32 keep-list: off."""
    config = OnnxRuntimeConfig(device="cuda", tensorrt=True, precisions=["fp32", "fp16"])
    old = (1, 21)
    trt, cuda, _ = provider_options(config, "images", SHAPES, precision="fp16", ort_version=old)
    assert trt["trt_fp16_enable"] == "True" and "trt_bf16_enable" not in trt
    assert cuda["use_tf32"] == "0"
    assert (
        "trt_fp16_enable"
        not in provider_options(config, "images", SHAPES, precision="fp32", ort_version=old)[0]
    )
    for version in ((1, 22), (1, 31), (2, 0)):
        trt = provider_options(config, "images", SHAPES, precision="fp16", ort_version=version)[0]
        assert "trt_fp16_enable" not in trt
    assert tensorrt_precision_flag("fp16", (1, 21)) == "trt_fp16_enable"
    assert (
        tensorrt_precision_flag("fp16", (1, 22)) is None and tensorrt_precision_flag("fp32", (1, 0)) is None
    )
    # The YAML still wins over the derived flag.
    on = config.model_copy(update={"tensorrt_options": {"trt_fp16_enable": True}})
    assert (
        provider_options(on, "images", SHAPES, precision="fp16", ort_version=(1, 31))[0]["trt_fp16_enable"]
        == "True"
    )


def test_tensorrt_engines_are_cached_per_graph_so_other_weights_never_share_one(tmp_path):
    """onnxruntime's engine id hashes the file name and tensor names, not the weights: two model.onnx
    graphs with the same names and other weights must get two engine directories."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def graph(weight: float, folder: str) -> Path:
        node = helper.make_node("Mul", ["images", "w"], ["out"])
        w = numpy_helper.from_array(np.full((1,), weight, np.float32), "w")
        dims = [None, 3, None, None]
        inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)]
        outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, dims)]
        model = helper.make_model(helper.make_graph([node], "g", inputs, outputs, [w]))
        path = tmp_path / folder / "model.onnx"
        path.parent.mkdir()
        onnx.save(model, path)
        return path

    config = OnnxRuntimeConfig(device="cuda", tensorrt=True)
    one, two = graph(1.0, "a"), graph(2.0, "b")
    paths = [
        provider_options(config, "images", SHAPES, cache_dir=tmp_path, graph_path=g)[0] for g in (one, two)
    ]
    engines = [Path(p["trt_engine_cache_path"]) for p in paths]
    assert engines[0] != engines[1]
    assert all(e.parent == tmp_path / "onnxruntime-tensorrt" for e in engines)
    assert {p["trt_timing_cache_path"] for p in paths} == {str(tmp_path / "onnxruntime-tensorrt")}
    again = provider_options(config, "images", SHAPES, cache_dir=tmp_path, graph_path=one)[0]
    assert again["trt_engine_cache_path"] == str(engines[0])  # the same graph finds its engine


def test_a_graph_the_provider_splits_gets_no_explicit_profile(tmp_path):
    """NonMaxSuppression, NonZero and RoiAlign stay off TensorRT by default (Mask R-CNN has them): the
    later subgraphs' dynamic inputs would have no profile, which onnxruntime refuses. Such a graph gets
    none, the provider builds per shape, and the runner says which it was."""
    import onnx
    from onnx import TensorProto, helper

    def graph(op: str, name: str) -> Path:
        dims = [None, 3, None, None]
        node = helper.make_node(op, ["images"], ["out"])
        out_type = TensorProto.FLOAT if op == "Relu" else TensorProto.INT64
        inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)]
        model = helper.make_model(
            helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("out", out_type, None)])
        )
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, path)
        return path

    config = OnnxRuntimeConfig(device="cuda", tensorrt=True)
    whole, split = graph("Relu", "whole"), graph("NonZero", "split")
    assert partition_ops(whole, config) == [] and partition_ops(split, config) == ["NonZero"]
    mine = config.model_copy(update={"tensorrt_options": {"trt_op_types_to_exclude": "Relu"}})
    assert partition_ops(whole, mine) == ["Relu"] and partition_ops(split, mine) == []
    explicit = provider_options(config, "images", SHAPES, graph_path=whole, partitioned_by=[])[0]
    per_shape = provider_options(config, "images", SHAPES, graph_path=split, partitioned_by=["NonZero"])[0]
    assert "trt_profile_max_shapes" in explicit and not any(k.startswith("trt_profile") for k in per_shape)

    runner = tensorrt_runner()
    runner.partitioned_by = ["NonZero"]
    runner.provider_options = [per_shape, {}, {}]
    assert runner.batch_limit() is None  # no profile: nothing bounds the batch but memory
    assert (
        runner.describe()["trt_profile"] == "per shape: the graph is partitioned (NonZero stay off TensorRT)"
    )
    assert tensorrt_runner().describe()["trt_profile"] == "explicit: one profile over every cell"


def tensorrt_runner(precision: str = "fp32", **options) -> OnnxRuntimeRunner:
    """A runner as activate() leaves it with the TensorRT provider active (no GPU needed to read it)."""
    config = OnnxRuntimeConfig(device="cuda", tensorrt=True, **options)
    runner = OnnxRuntimeRunner(None, config, precision, None, SHAPES)
    runner.provider_options = provider_options(config, "images", SHAPES, precision=precision)
    runner.active_providers = [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]
    runner.io_binding, runner._ort_device, runner.pinned, runner.emulated = True, "cuda", True, False
    return runner


def test_the_tensorrt_providers_profile_bounds_the_batch_search():
    assert tensorrt_runner().batch_limit() == (
        4,
        "the TensorRT provider's optimization profile ends at batch 4",
    )
    cuda_only = tensorrt_runner()
    cuda_only.active_providers = [CUDA_PROVIDER, CPU_PROVIDER]
    assert cuda_only.batch_limit() is None  # the CUDA provider takes any batch memory allows


def test_the_tensorrt_providers_fp32_is_recorded_as_tf32_and_judged_against_the_tf32_peak():
    info = tensorrt_runner().describe()
    assert info["tf32"] is True and "no switch" in info["tf32_forced_by"]
    assert "tf32" not in tensorrt_runner("fp16").describe()
    from segbench.bench.peak import roof_precision

    # The entry's own option says tf32: false; what the backend did wins.
    assert roof_precision("cuda", "fp32", {"tf32": False}, info) == "tf32"
    assert roof_precision("cuda", "fp32", {"tf32": False}, {}) == "fp32"


def test_pinned_memory_needs_cuda_and_io_binding():
    with pytest.raises(ValidationError, match="need device: cuda"):
        OnnxRuntimeConfig(pinned_memory=True)
    with pytest.raises(ValidationError, match="needs io_binding"):
        OnnxRuntimeConfig(device="cuda", pinned_memory=True, io_binding=False)
    assert OnnxRuntimeConfig(device="cuda", pinned_memory=False).variant() == {"pinned_memory": False}


def test_inputs_are_staged_in_one_reused_buffer_per_shape(monkeypatch):
    """The staging buffers (page-locked on a GPU; torch's plain host memory stands in here)."""
    import torch

    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, pin_memory=False, **kw: real_empty(*a, **kw))
    runner = OnnxRuntimeRunner(None, OnnxRuntimeConfig(device="cuda"), "fp32")
    runner._staging = {}
    first = np.arange(24, dtype=np.float32).reshape(1, 3, 2, 4)
    staged = runner._stage("images", first)
    np.testing.assert_array_equal(staged, first)
    assert staged is not first and runner._stage("images", first + 1) is staged  # one buffer, refilled
    np.testing.assert_array_equal(staged, first + 1)
    assert runner._stage("images", np.zeros((2, 3, 2, 4), np.float32)) is not staged
    runner.release_cached_shapes()
    assert runner._staging == {}


def test_engine_cache_can_be_switched_off():
    config = OnnxRuntimeConfig(device="cuda", tensorrt=True, trt_engine_cache=False)
    trt = provider_options(config, "images", [])[0]
    assert not any(key.startswith(("trt_engine_cache", "trt_profile")) for key in trt)


def test_cpu_gets_plain_cpu_provider():
    assert provider_options(OnnxRuntimeConfig(), "images", SHAPES) == [{}]


def test_fp16_precision_is_accepted_and_bf16_is_not():
    assert OnnxRuntimeConfig(precisions=["fp32", "fp16"]).precisions == ["fp32", "fp16"]
    with pytest.raises(ValidationError, match="does not support precision bf16"):
        OnnxRuntimeConfig(precisions=["bf16"])


@pytest.mark.slow
def test_runner_runs_an_fp16_graph_and_records_its_provider(tiny_unet_graph):
    graph = tiny_unet_graph("fp16")
    model = build_model("unet", options=TINY_UNET)
    runner = OnnxRuntimeRunner(model, OnnxRuntimeConfig(precisions=["fp16"]), "fp16", graph.path, SHAPES[:1])
    with runner:
        outputs = runner.infer({"images": np.zeros((2, 3, 32, 48), np.float32)})
        info = runner.describe()
    assert outputs["logits"].shape == (2, 6, 32, 48) and outputs["logits"].dtype == np.float32
    assert info["provider"] == CPU_PROVIDER and "provider_options" not in info


@pytest.mark.slow
def test_io_binding_gives_the_same_outputs_and_times_each_copy(tiny_unet_graph):
    graph = tiny_unet_graph()
    model = build_model("unet", options=TINY_UNET)
    feeds = {"images": np.random.default_rng(0).normal(size=(2, 3, 32, 48)).astype(np.float32)}
    with OnnxRuntimeRunner(model, OnnxRuntimeConfig(), "fp32", graph.path) as plain:
        expected = plain.infer(feeds)["logits"]
        assert plain.describe()["io_binding"] is False and plain.last_stages_ms is None
    with OnnxRuntimeRunner(model, OnnxRuntimeConfig(io_binding=True), "fp32", graph.path) as bound:
        actual = bound.infer(feeds)["logits"]
        stages = bound.last_stages_ms
    np.testing.assert_array_equal(actual, expected)
    # The run is host wall time (no CUDA events in onnxruntime): run_host, never compute.
    assert set(stages) == {"h2d", "run_host", "d2h"} and all(v >= 0 for v in stages.values())
    assert stages["run_host"] > 0


def test_a_provider_compiled_in_but_unable_to_load_is_skipped_at_plan_time(monkeypatch):
    """get_available_providers() lists what was compiled in: a TensorRT provider linked against another
    TensorRT, or without its CUDA libraries, is listed yet falls back at session creation. The plan
    probes it on a one-node graph and skips the entry with the reason instead of failing every cell."""
    import sys
    import types

    from segbench.backends.onnxruntime_backend import provider_load_failure, unavailable_reason

    def fake_onnxruntime(active: list[str] | Exception) -> types.SimpleNamespace:
        class Session:
            def __init__(self, model, options, providers):
                assert isinstance(model, bytes) and providers[0] == TENSORRT_PROVIDER
                if isinstance(active, Exception):
                    raise active

            def get_providers(self):
                return active

        listed = [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]
        return types.SimpleNamespace(get_available_providers=lambda: listed, InferenceSession=Session,
                                     SessionOptions=types.SimpleNamespace)  # fmt: skip

    config = OnnxRuntimeConfig(device="cuda", tensorrt=True)
    for active, expected in (
        ([CUDA_PROVIDER, CPU_PROVIDER], "cannot load it (a session fell back to CUDAExecutionProvider"),
        (RuntimeError("libnvinfer.so.10: cannot open shared object file"), "libnvinfer.so.10"),
        ([TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER], None),
    ):
        provider_load_failure.cache_clear()
        monkeypatch.setitem(sys.modules, "onnxruntime", fake_onnxruntime(active))
        reason = unavailable_reason(config)
        assert (reason is None) if expected is None else (expected in reason), reason
    provider_load_failure.cache_clear()
    assert unavailable_reason(OnnxRuntimeConfig()) is None  # the CPU provider needs no probe


def test_pips_tensorrt_libraries_are_loaded_before_a_tensorrt_provider_session(monkeypatch, tmp_path):
    """onnxruntime's TensorRT provider opens libnvinfer.so.10 by name: the libraries pip installs
    (tensorrt_libs) are loaded, by importing the package, before the probe session is created."""
    import sys
    import types

    from segbench.backends.onnxruntime_backend import provider_load_failure

    package = tmp_path / "tensorrt_libs"
    package.mkdir()
    (package / "__init__.py").write_text("import os\nos.environ['SEGBENCH_TEST_TRT_LIBS'] = 'loaded'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt_libs", raising=False)
    monkeypatch.delenv("SEGBENCH_TEST_TRT_LIBS", raising=False)
    seen = []

    class Session:
        def __init__(self, model, options, providers):
            import os

            seen.append(os.environ.get("SEGBENCH_TEST_TRT_LIBS"))

        def get_providers(self):
            return [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]

    fake = types.SimpleNamespace(InferenceSession=Session, SessionOptions=types.SimpleNamespace)
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    provider_load_failure.cache_clear()
    try:
        assert provider_load_failure((TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER)) is None
    finally:
        provider_load_failure.cache_clear()
    assert seen == ["loaded"]
