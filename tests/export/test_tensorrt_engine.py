"""TensorRT runtime (``TensorRTEngine``), against the stand-in ``tensorrt`` module on the CPU.

Engines come from the build seam's fake and load in the runtime fake; nothing here ran on a real
TensorRT installation, and the CUDA-only paths (streams, events, graph capture) not at all.
"""

from __future__ import annotations

import types
from contextlib import nullcontext

import pytest
import torch

from segbench.backends.tensorrt.engine import TensorRTEngine
from segbench.backends.tensorrt.profile import OptimizationProfile
from tests.fakes.fake_tensorrt import calls_named, install_fake_tensorrt
from tests.fakes.fake_tensorrt_build import fake_engine_bytes

# These tests are about exporting and caching: each starts from an empty export cache.
pytestmark = pytest.mark.fresh_export_cache

PROFILE = OptimizationProfile("images", (1, 3, 8, 8), (2, 3, 16, 16), (4, 3, 32, 32))


def engine_for(monkeypatch, onnx_file, version="10.8.0", **network):
    trt = install_fake_tensorrt(monkeypatch, version)
    return trt, TensorRTEngine(
        trt, fake_engine_bytes(trt, PROFILE, **network), torch.device("cpu"), trt.Logger()
    )


def test_static_outputs_are_computed_and_buffers_reused(monkeypatch, onnx_file):
    trt, engine = engine_for(monkeypatch, onnx_file)
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


def test_inputs_are_cast_to_the_engine_type(monkeypatch, onnx_file):
    _, engine = engine_for(monkeypatch, onnx_file, input_dtype="HALF")
    x = torch.randn(1, 3, 8, 8)
    out = engine.infer({"images": x})["logits"]
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, (2 * x).half())
    _, engine = engine_for(monkeypatch, onnx_file)
    x64 = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(engine.infer({"images": x64})["logits"], (2 * x64).float())


def test_bad_inputs_are_refused(monkeypatch, onnx_file):
    _, engine = engine_for(monkeypatch, onnx_file)
    with pytest.raises(ValueError, match="outside the engine's optimization profile"):
        engine.infer({"images": torch.zeros(8, 3, 8, 8)})
    with pytest.raises(ValueError, match="missing engine inputs: images"):
        engine.infer({"pixels": torch.zeros(1, 3, 8, 8)})


def test_data_dependent_outputs_go_through_the_output_allocator(monkeypatch, onnx_file):
    trt, engine = engine_for(monkeypatch, onnx_file, data_dependent=True)
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


def test_trt11_engine_reports_device_memory_from_v2(monkeypatch, onnx_file):
    _, engine = engine_for(monkeypatch, onnx_file, version="11.1.0")
    assert not hasattr(engine.engine, "device_memory_size")  # removed in 11; the v2 property remains
    assert engine.device_memory_bytes == 3 << 20
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(engine.infer({"images": x})["logits"], 2 * x)


def test_unloadable_engine_raises(monkeypatch, onnx_file):
    engine_bytes = fake_engine_bytes(install_fake_tensorrt(monkeypatch, "10.8.0"), PROFILE)
    other = install_fake_tensorrt(monkeypatch, "10.9.0")
    with pytest.raises(RuntimeError, match="could not deserialize"):
        TensorRTEngine(other, engine_bytes, torch.device("cpu"), other.Logger())
    with pytest.raises(RuntimeError, match="could not deserialize"):
        TensorRTEngine(other, b"not an engine", torch.device("cpu"), other.Logger())
    assert len(calls_named(other, "deserialize_cuda_engine")) == 2


def test_cuda_graph_and_events_stay_off_on_the_cpu(monkeypatch, onnx_file):
    trt = install_fake_tensorrt(monkeypatch, "10.8.0")
    engine = TensorRTEngine(trt, fake_engine_bytes(trt, PROFILE), torch.device("cpu"), trt.Logger(),
                            use_cuda_graph=True, record_compute_ms=True)  # fmt: skip
    assert not engine.cuda_graph_active and engine.cuda_graph_fallback is None
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(engine.infer({"images": x})["logits"], 2 * x)
    assert engine.last_compute_ms is None


def test_failed_graph_capture_falls_back_to_eager_once(monkeypatch, onnx_file):
    """As trtexec does: one failed capture, then eager launches, and the reason kept for describe()."""
    trt, engine = engine_for(monkeypatch, onnx_file)
    engine.cuda_graph_active = True  # as on a GPU; the capture itself is what fails here
    captures = []

    def failing_capture(stream):
        captures.append(stream)
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(engine, "_capture", failing_capture)
    stream = types.SimpleNamespace(cuda_stream=0)
    for batch in (1, 2, 2):
        x = torch.randn(batch, 3, 8, 8)
        torch.testing.assert_close(engine._infer_on({"images": x}, stream, 0)["logits"], 2 * x)
    assert len(captures) == 1  # not retried on later calls or other shapes
    assert not engine.cuda_graph_active
    assert engine.cuda_graph_fallback == "RuntimeError: operation not permitted when stream is capturing"
    # the warm-up before the capture, then eager for that call and the two after it
    assert len(calls_named(trt, "execute_async_v3")) == 4


def test_profile_max_shape(monkeypatch, onnx_file):
    _, engine = engine_for(monkeypatch, onnx_file)
    assert engine.profile_max_shape("images") == PROFILE.max
    _, static = engine_for(monkeypatch, onnx_file, input_shape=(2, 3, 16, 16))
    assert static.profile_max_shape("images") == (2, 3, 16, 16)


def test_a_refused_tensor_address_is_an_error(monkeypatch, onnx_file):
    """set_tensor_address returns False for an address TensorRT refuses; running on would use a stale one."""
    _, engine = engine_for(monkeypatch, onnx_file)
    refused = []
    monkeypatch.setattr(engine.context, "set_tensor_address", lambda name, memory: refused.append(name))
    with pytest.raises(RuntimeError, match="TensorRT refused the device address of 'images'"):
        engine.infer({"images": torch.randn(1, 3, 8, 8)})
    assert refused == ["images"]


def test_an_output_found_data_dependent_late_is_run_eager_not_captured(monkeypatch, onnx_file):
    """_bind meets an output with a -1 dim the probe did not see: it goes through the output allocator,
    which a captured graph cannot replay, so no capture happens and the call runs eager."""
    trt, engine = engine_for(monkeypatch, onnx_file, data_dependent=True)
    engine._data_dependent.clear()  # as if the probe had not seen it
    engine.cuda_graph_active = True  # as on a GPU
    captures = []
    monkeypatch.setattr(engine, "_capture", lambda stream: captures.append(stream))
    stream = types.SimpleNamespace(cuda_stream=0)
    x = torch.ones(2, 3, 8, 8)
    out = engine._infer_on({"images": x}, stream, 0)
    assert captures == [] and not engine.cuda_graph_active
    assert engine.cuda_graph_fallback == "an output's shape depends on the data (output allocator)"
    assert out["boxes"].tolist() == [[0, 1.0, 1.0, 1.0], [1, 1.0, 1.0, 1.0]]
    assert len(calls_named(trt, "execute_async_v3")) == 1  # the eager run only


def test_without_a_stream_the_engine_runs_on_its_side_stream_ordered_with_the_current_one(
    monkeypatch, onnx_file
):
    """torch refuses to capture a CUDA graph on the legacy default stream, which may be the current one:
    infer() without a stream runs on the engine's own stream, after the current stream's work and before
    its later work (stand-in streams: no GPU here)."""
    _, engine = engine_for(monkeypatch, onnx_file)
    events = []

    class Stream:
        def __init__(self, name):
            self.name, self.cuda_stream = name, 0

        def wait_stream(self, other):
            events.append(f"{self.name} waits for {other.name}")

    current = Stream("current")
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: Stream("side"))
    monkeypatch.setattr(
        torch.cuda, "stream", lambda stream: events.append(f"on {stream.name}") or nullcontext()
    )
    ran_on = []
    real = engine._infer_on
    monkeypatch.setattr(engine, "_infer_on", lambda i, s, h: ran_on.append(s.name) or real(i, None, h))
    engine._on_cuda = True
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(engine.infer({"images": x})["logits"], 2 * x)
    assert ran_on == ["side"]
    assert events == ["side waits for current", "on side", "current waits for side"]
    given = Stream("given")
    events.clear()
    engine.infer({"images": x}, stream=given)
    assert ran_on[-1] == "given" and events == ["on given"]  # a given stream is the caller's to order
