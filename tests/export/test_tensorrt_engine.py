"""TensorRT runtime (``TensorRTEngine``), against the stand-in ``tensorrt`` module on the CPU.

The fake checks every call against the documented TensorRT 10 / 11 Python API; nothing here ran on a
real TensorRT installation, and the CUDA-only paths (streams, events, graph capture) not at all.
"""

from __future__ import annotations

import pytest
import torch

from segbench.export.tensorrt import OptimizationProfile, build_serialized_engine
from segbench.export.tensorrt_engine import TensorRTEngine
from tests.fakes.fake_tensorrt import FakeControls, calls_named, make_fake_tensorrt

PROFILE = OptimizationProfile("images", (1, 3, 8, 8), (2, 3, 16, 16), (4, 3, 32, 32))


def engine_for(onnx_file, version="10.8.0", **controls):
    trt = make_fake_tensorrt(version, FakeControls(**controls))
    engine_bytes = build_serialized_engine(trt, onnx_file, "fp32", PROFILE)
    trt.calls.clear()
    return trt, TensorRTEngine(trt, engine_bytes, torch.device("cpu"))


def test_static_outputs_are_computed_and_buffers_reused(onnx_file):
    trt, engine = engine_for(onnx_file)
    assert engine.input_names == ["images"] and engine.output_names == ["logits"]
    assert not engine.has_data_dependent_outputs
    assert engine.device_memory_bytes == 3 << 20
    x = torch.randn(2, 3, 8, 12)
    out = engine.infer({"images": x})
    torch.testing.assert_close(out["logits"], 2 * x)
    assert ("set_input_shape", "images", (2, 3, 8, 12)) in trt.calls
    assert ("set_tensor_address", "images", x.data_ptr()) in trt.calls
    assert calls_named(trt, "execute_async_v3") == [(0,)]
    assert engine.last_compute_ms is None  # CUDA events only on a GPU

    buffer = out["logits"].data_ptr()
    y = torch.randn(2, 3, 8, 12)
    torch.testing.assert_close(engine.infer({"images": y})["logits"], 2 * y)
    assert engine.infer({"images": y})["logits"].data_ptr() == buffer  # same shape: same buffer
    z = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(engine.infer({"images": z})["logits"], 2 * z)


def test_inputs_are_cast_to_the_engine_type(onnx_file):
    _, engine = engine_for(onnx_file, input_dtype="HALF")
    x = torch.randn(1, 3, 8, 8)
    out = engine.infer({"images": x})["logits"]
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, (2 * x).half())
    _, engine = engine_for(onnx_file)
    x64 = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(engine.infer({"images": x64})["logits"], (2 * x64).float())


def test_bad_inputs_are_refused(onnx_file):
    _, engine = engine_for(onnx_file)
    with pytest.raises(ValueError, match="outside the engine's optimization profile"):
        engine.infer({"images": torch.zeros(8, 3, 8, 8)})
    with pytest.raises(ValueError, match="missing engine inputs: images"):
        engine.infer({"pixels": torch.zeros(1, 3, 8, 8)})


def test_data_dependent_outputs_go_through_the_output_allocator(onnx_file):
    trt, engine = engine_for(onnx_file, data_dependent=True)
    assert engine.has_data_dependent_outputs
    assert calls_named(trt, "set_output_allocator") == [("boxes",)]
    x = torch.full((3, 3, 8, 8), -1.0)
    x[0, 0, 0, 0], x[2, 0, 0, 0] = 1.5, 2.0
    out = engine.infer({"images": x})
    torch.testing.assert_close(out["boxes"], torch.tensor([[0, 1.5, 1.5, 1.5], [2, 2, 2, 2]]))
    assert out["num_detections"].dtype == torch.int32 and out["num_detections"].tolist() == [1, 0, 1]
    torch.testing.assert_close(out["logits"], 2 * x)

    many = torch.ones(4, 3, 16, 16)  # more rows than before: the buffer grows
    assert engine.infer({"images": many})["boxes"].tolist() == [[n, 1.0, 1.0, 1.0] for n in range(4)]
    none = -torch.ones(2, 3, 8, 8)
    assert engine.infer({"images": none})["boxes"].shape == (0, 4)


def test_trt11_engine_reports_device_memory_from_v2(onnx_file):
    _, engine = engine_for(onnx_file, version="11.1.0")
    assert not hasattr(engine.engine, "device_memory_size")  # removed in 11; the v2 property remains
    assert engine.device_memory_bytes == 3 << 20
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(engine.infer({"images": x})["logits"], 2 * x)


def test_unloadable_engine_raises(onnx_file):
    trt = make_fake_tensorrt("10.8.0")
    engine_bytes = build_serialized_engine(trt, onnx_file, "fp32", PROFILE)
    with pytest.raises(RuntimeError, match="could not deserialize"):
        TensorRTEngine(make_fake_tensorrt("10.9.0"), engine_bytes, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="could not deserialize"):
        TensorRTEngine(trt, b"not an engine", torch.device("cpu"))


def test_cuda_graph_and_events_stay_off_on_the_cpu(onnx_file):
    trt = make_fake_tensorrt("10.8.0")
    engine_bytes = build_serialized_engine(trt, onnx_file, "fp32", PROFILE)
    engine = TensorRTEngine(
        trt, engine_bytes, torch.device("cpu"), use_cuda_graph=True, record_compute_ms=True
    )
    assert not engine.cuda_graph_active
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(engine.infer({"images": x})["logits"], 2 * x)
    assert engine.last_compute_ms is None
