"""onnxruntime backend: provider options from the YAML, fp16 graphs, the active provider recorded."""

import numpy as np
import pytest
from pydantic import ValidationError

from segbench.backends.onnxruntime_backend import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    TENSORRT_PROVIDER,
    OnnxRuntimeConfig,
    OnnxRuntimeRunner,
    provider_options,
    requested_providers,
)
from segbench.export.artifacts import ExportRequest, cached_export
from segbench.models import build_model

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
    assert trt["trt_engine_cache_path"] == str(tmp_path / "onnxruntime-tensorrt")
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


def test_an_fp16_graph_turns_on_the_tensorrt_providers_fp16_kernels():
    config = OnnxRuntimeConfig(device="cuda", tensorrt=True, precisions=["fp32", "fp16"])
    trt, cuda, _ = provider_options(config, "images", SHAPES, precision="fp16")
    assert trt["trt_fp16_enable"] == "True" and "trt_bf16_enable" not in trt
    assert cuda["use_tf32"] == "0"
    assert "trt_fp16_enable" not in provider_options(config, "images", SHAPES, precision="fp32")[0]
    # The YAML still wins over the derived flag.
    off = config.model_copy(update={"tensorrt_options": {"trt_fp16_enable": False}})
    assert provider_options(off, "images", SHAPES, precision="fp16")[0]["trt_fp16_enable"] == "False"


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


def test_runner_runs_an_fp16_graph_and_records_its_provider(tmp_path):
    model = build_model("unet", options={"base_channels": 4, "num_classes": 3})
    graph = cached_export(model, "unet", ExportRequest(precision="fp16"), tmp_path)
    runner = OnnxRuntimeRunner(model, OnnxRuntimeConfig(precisions=["fp16"]), "fp16", graph.path, SHAPES[:1])
    with runner:
        outputs = runner.infer({"images": np.zeros((2, 3, 32, 48), np.float32)})
        info = runner.describe()
    assert outputs["logits"].shape == (2, 3, 32, 48) and outputs["logits"].dtype == np.float32
    assert info["provider"] == CPU_PROVIDER and "provider_options" not in info


def test_io_binding_gives_the_same_outputs_and_times_each_copy(tmp_path):
    model = build_model("unet", options={"base_channels": 4, "num_classes": 3})
    graph = cached_export(model, "unet", ExportRequest(), tmp_path)
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
