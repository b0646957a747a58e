"""The native TensorRT backend's config, availability and precision routing (no GPU or TensorRT needed).

Engine runs need CUDA; they are covered on the CPU through ``TensorRTEngine`` in
``tests/export/test_tensorrt_engine.py`` with the stand-in ``tensorrt`` module.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from segbench.backends import BACKENDS, GRAPH
from segbench.backends.base import BackendError
from segbench.backends.tensorrt_backend import SPEC, TensorRTConfig, TensorRTRunner, _to_host
from segbench.export.tensorrt import INSTALL_HINT
from tests.fakes.fake_tensorrt import make_fake_tensorrt

MODEL = types.SimpleNamespace(input_names=("images",), output_names=("logits",))


def test_config_is_cuda_only_with_a_clear_message():
    with pytest.raises(ValidationError, match="tensorrt runs on NVIDIA GPUs only"):
        TensorRTConfig(device="cpu")
    assert TensorRTConfig().device == "cuda"


def test_config_accepts_gpu_precisions_and_options():
    config = TensorRTConfig(precisions=["fp16", "bf16", "fp32"], workspace_mb=2048, cuda_graph=True)
    assert config.precisions == ["fp16", "bf16", "fp32"]
    assert config.variant() == {"workspace_mb": 2048, "cuda_graph": True}


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


@pytest.mark.parametrize(("version", "expected"), [("10.8.0", "fp32"), ("11.1.0", "fp16")])
def test_graph_precision_follows_the_major_version(monkeypatch, version, expected):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt(version))
    config = TensorRTConfig(precisions=["fp16"])
    assert SPEC.graph_precision(config, "fp16") == expected
    assert SPEC.graph_precision(config, "fp32") == "fp32"


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


def test_outputs_come_back_as_float32_or_their_own_type():
    half = _to_host(torch.ones(2, 2, dtype=torch.float16))
    bf16 = _to_host(torch.ones(2, dtype=torch.bfloat16))
    ints = _to_host(torch.arange(3, dtype=torch.int32))
    assert half.dtype == np.float32 and bf16.dtype == np.float32
    assert ints.dtype == np.int32 and ints.tolist() == [0, 1, 2]
