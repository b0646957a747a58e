"""The native TensorRT backend's config, availability and precision routing (no GPU or TensorRT needed).

Engine runs need CUDA; they are covered on the CPU through ``TensorRTEngine`` in
``tests/export/test_tensorrt_engine.py`` with the stand-in runtime (``tests/fakes/fake_tensorrt.py``).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from segbench.backends import BACKENDS, GRAPH
from segbench.backends.base import BackendError
from segbench.backends.tensorrt import SPEC, TensorRTConfig, TensorRTRunner
from segbench.backends.tensorrt.engine import TensorRTEngine
from segbench.backends.tensorrt.install import INSTALL_HINT
from segbench.backends.tensorrt.precision import (
    check_engine_io,
    check_engine_precision,
    check_graph_precision,
)
from segbench.backends.tensorrt.profile import OptimizationProfile
from segbench.backends.tensorrt.staging import HostStaging
from tests.fakes.fake_tensorrt import install_fake_tensorrt, make_fake_tensorrt
from tests.fakes.fake_tensorrt_build import fake_engine_bytes

MODEL = types.SimpleNamespace(input_names=("images",), output_names=("logits",))


def test_config_is_cuda_only_with_a_clear_message():
    with pytest.raises(ValidationError, match="tensorrt runs on NVIDIA GPUs only"):
        TensorRTConfig(device="cpu")
    assert TensorRTConfig().device == "cuda"


def test_config_accepts_gpu_precisions_and_options():
    config = TensorRTConfig(precisions=["fp16", "bf16", "fp32"], workspace_mb=2048, cuda_graph=True)
    assert config.precisions == ["fp16", "bf16", "fp32"]
    assert config.variant() == {"workspace_mb": 2048, "cuda_graph": True}
    # TensorRT's default TF32 is cleared unless asked for; asking shows in the results' variant.
    assert TensorRTConfig().tf32 is False and TensorRTConfig(tf32=True).variant() == {"tf32": True}


@pytest.mark.parametrize(
    "options",
    [
        {"int8": True},
        {"precisions": ["int8"]},
        {"workspace_mb": 0},
        {"builder_optimization_level": 6},
        {"opset": 12},
        {"exporter": "tracing"},
    ],
)
def test_config_rejects_bad_options(options):
    with pytest.raises(ValidationError):
        TensorRTConfig(**options)


def test_spec_declares_what_it_runs_and_is_registered():
    assert BACKENDS["tensorrt"] is SPEC
    assert SPEC.config_class is TensorRTConfig and SPEC.runner_class is TensorRTRunner
    assert SPEC.consumes == GRAPH
    assert SPEC.artifact_suffixes == (".onnx", ".engine")
    assert TensorRTRunner.device_stages == ("compute",)


def test_unavailable_without_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert SPEC.unavailable(TensorRTConfig()) == INSTALL_HINT


def test_unavailable_without_cuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.8.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert SPEC.unavailable(TensorRTConfig()) == "no CUDA device visible to torch"


def test_available_with_tensorrt_and_cuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("11.1.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert SPEC.unavailable(TensorRTConfig()) is None


def test_unavailable_with_an_unsupported_major(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("8.6.1"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    reason = SPEC.unavailable(TensorRTConfig())
    assert reason is not None and "8.6.1 is not supported" in reason


@pytest.mark.parametrize("version", ["10.8.0", "11.1.0"])
def test_graph_precision_is_the_engine_precision_on_both_majors(monkeypatch, version):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt(version))
    config = TensorRTConfig(precisions=["fp16"])
    assert SPEC.graph_precision(config, "fp16") == "fp16"  # the keep-list graph, strongly typed
    assert SPEC.graph_precision(config, "fp32") == "fp32"


def test_bf16_is_the_fp32_graph_on_10_and_refused_on_11(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.8.0"))
    assert SPEC.graph_precision(TensorRTConfig(precisions=["bf16"]), "bf16") == "fp32"
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("11.1.0"))
    with pytest.raises(BackendError) as info:
        SPEC.graph_precision(TensorRTConfig(precisions=["bf16"]), "bf16")
    message = str(info.value)
    assert "\n" not in message
    assert "TensorRT 11.1.0 needs a bf16 ONNX graph, which segbench does not write" in message


def test_graph_precision_without_tensorrt_is_the_requested_one(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert SPEC.graph_precision(TensorRTConfig(), "bf16") == "bf16"


def test_activate_needs_input_shapes_and_an_artifact(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.8.0"))
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"graph")
    with pytest.raises(BackendError, match="input shapes to derive an optimization profile"):
        TensorRTRunner(MODEL, TensorRTConfig(), "fp32", onnx_file).activate()
    with pytest.raises(BackendError, match="needs an exported ONNX file"):
        TensorRTRunner(MODEL, TensorRTConfig(), "fp32", None, [(1, 3, 8, 8)]).activate()


def write_graph(path, weight_type):
    """A one-Mul ONNX graph with an fp32 input and a weight of ``weight_type``."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", weight_type, [1], [1.0] if weight_type == TensorProto.FLOAT else [15360])
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["xc"], to=weight_type),
            helper.make_node("Mul", ["xc", "w"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", weight_type, [1, 3, 8, 8])],
        [weight],
    )
    onnx.save(helper.make_model(graph), path)
    return path


def test_an_engine_artifact_is_checked_against_its_sidecar_and_its_io_types(monkeypatch, tmp_path):
    """A .engine artifact cannot be asked what it computes in: the JSON segbench writes beside it (the
    engine cache's, segbench export's manifest) says, and half-precision I/O gives an fp16 engine away."""
    import json

    engine = tmp_path / "unet-fp16.engine"
    engine.write_bytes(b"engine")
    assert check_engine_precision(engine, "fp32") == "engine I/O types only (no segbench sidecar beside it)"
    manifest = {"onnx": "unet-fp16.onnx", "engine": {"precision": "fp16", "copy": str(engine)}}
    (tmp_path / "unet-fp16.json").write_text(json.dumps(manifest))
    assert check_engine_precision(engine, "fp16") == "sidecar unet-fp16.json"
    refused = r"^unet-fp16\.engine was built at fp16 \(unet-fp16\.json says so\): run it at precision fp16$"
    with pytest.raises(BackendError, match=refused):
        check_engine_precision(engine, "fp32")
    cached = tmp_path / "0123abcd.engine"
    (tmp_path / "0123abcd.json").write_text(json.dumps({"precision": "fp32", "onnx_digest": "x"}))
    assert check_engine_precision(cached, "fp32") == "sidecar 0123abcd.json"

    runner = cpu_runner(monkeypatch, tmp_path, input_dtype="HALF")
    foreign = r"^e\.engine has images \(float16\), logits \(float16\) I/O: it was not built at fp32$"
    with pytest.raises(BackendError, match=foreign):
        check_engine_io(runner._engine, Path("e.engine"), "fp32")
    check_engine_io(runner._engine, Path("e.engine"), "fp16")
    check_engine_io(cpu_runner(monkeypatch, tmp_path)._engine, Path("e.engine"), "fp16")  # fp32 I/O is usual


@pytest.mark.parametrize("version", ["10.8.0", "11.1.0"])
def test_artifact_graph_at_another_precision_is_refused(tmp_path, version):
    from onnx import TensorProto

    trt = make_fake_tensorrt(version)
    fp32 = write_graph(tmp_path / "model.onnx", TensorProto.FLOAT)
    fp16 = write_graph(tmp_path / "model-fp16.onnx", TensorProto.FLOAT16)
    check_graph_precision(fp32, "fp32", trt)
    check_graph_precision(fp16, "fp16", trt)
    # An fp32 graph run as fp16 would build an fp32 engine labelled fp16.
    with pytest.raises(BackendError, match=r"model\.onnx computes in fp32, but a TensorRT \d+ fp16 engine"):
        check_graph_precision(fp32, "fp16", trt)
    with pytest.raises(BackendError, match="computes in fp16") as info:
        check_graph_precision(fp16, "fp32", trt)
    assert "\n" not in str(info.value)


def test_artifact_bf16_graphs(tmp_path):
    from onnx import TensorProto

    bf16 = write_graph(tmp_path / "model-bf16.onnx", TensorProto.BFLOAT16)
    check_graph_precision(bf16, "bf16", make_fake_tensorrt("11.1.0"))  # what 11 needs for bf16
    check_graph_precision(bf16, "bf16", make_fake_tensorrt("10.8.0"))  # the graph at the precision itself
    fp32 = write_graph(tmp_path / "model.onnx", TensorProto.FLOAT)
    check_graph_precision(fp32, "bf16", make_fake_tensorrt("10.8.0"))  # lowered by the BF16 flag
    with pytest.raises(BackendError, match="computes in fp32"):
        check_graph_precision(fp32, "bf16", make_fake_tensorrt("11.1.0"))


def test_host_staging_reuses_buffers_and_widens_half_outputs():
    staging = HostStaging(pinned=False)  # page-locked on a GPU machine; the copies are the same
    feeds = {"images": np.ones((2, 3, 4, 4), dtype=np.float32)}
    first = staging.to_device(feeds, torch.device("cpu"))["images"]
    again = staging.to_device({"images": np.zeros((2, 3, 4, 4), dtype=np.float32)}, torch.device("cpu"))
    assert again["images"].data_ptr() == first.data_ptr() and again["images"].sum() == 0
    host = staging.to_host(
        {
            "half": torch.ones(2, 2, dtype=torch.float16),
            "bf16": torch.ones(2, dtype=torch.bfloat16),
            "ints": torch.arange(3, dtype=torch.int32),
        }
    )
    assert host["half"].dtype == torch.float32 and host["bf16"].dtype == torch.float32
    assert host["ints"].dtype == torch.int32 and host["ints"].tolist() == [0, 1, 2]
    staging.clear()
    assert staging.to_device(feeds, torch.device("cpu"))["images"].data_ptr() != first.data_ptr()


def cpu_runner(monkeypatch, tmp_path, **network):
    """A runner around an engine from the fake build, run on the CPU by the fake runtime (activate needs
    CUDA)."""
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"graph")
    trt = install_fake_tensorrt(monkeypatch, "10.8.0")
    profile = OptimizationProfile("images", (1, 3, 8, 8), (4, 3, 16, 16), (8, 3, 16, 16))
    runner = TensorRTRunner(MODEL, TensorRTConfig(cuda_graph=True), "fp32", onnx_file, [(8, 3, 16, 16)])
    engine_bytes = fake_engine_bytes(trt, profile, **network)
    runner._engine = TensorRTEngine(trt, engine_bytes, torch.device("cpu"), trt.Logger())
    return runner


def test_batch_limit_is_the_profile_max(monkeypatch, tmp_path):
    assert TensorRTRunner(MODEL, TensorRTConfig(), "fp32").batch_limit() is None  # not active
    runner = cpu_runner(monkeypatch, tmp_path)
    assert runner.batch_limit() == (8, "the engine's optimization profile ends at batch 8")
    static = cpu_runner(monkeypatch, tmp_path, input_shape=(2, 3, 16, 16))
    assert static.batch_limit() == (2, "the engine takes a static batch of 2")


def test_describe_reports_a_cuda_graph_fallback(monkeypatch, tmp_path):
    runner = cpu_runner(monkeypatch, tmp_path)
    runner._trt_version, runner._engine_path, runner._engine_built = "10.8.0", tmp_path / "e.engine", True
    runner._build_s, runner._load_s, runner._profile, runner._engine_mb = 1.0, 0.1, None, 1.0
    runner._precision_check = "built here from the graph"
    runner._device = torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    info = runner.describe()
    assert info["cuda_graph"] is False and "cuda_graph_fallback" not in info
    assert info["tf32"] is False and info["pinned_memory"] is True
    runner._engine.cuda_graph_fallback = "RuntimeError: capture failed"
    info = runner.describe()
    assert info["cuda_graph"] == "fallback" and info["cuda_graph_fallback"] == "RuntimeError: capture failed"
