import numpy as np
import pytest

from segbench.bench.backends.onnxruntime_backend import OnnxRuntimeConfig, OnnxRuntimeRunner
from segbench.bench.backends.torch_backend import TorchConfig, TorchRunner
from segbench.bench.harness import latency_stats, measure_cell
from segbench.bench.memory import PeakHostMemory
from segbench.export.onnx import export_onnx
from segbench.models import build_model


def test_latency_stats_on_known_samples():
    stats = latency_stats(list(range(1, 101)))  # 1..100 ms
    assert stats["mean"] == pytest.approx(50.5)
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["min"] == 1 and stats["max"] == 100
    assert stats["std"] == pytest.approx(np.std(np.arange(1, 101)))
    with pytest.raises(ValueError):
        latency_stats([])


@pytest.fixture(scope="module")
def model():
    return build_model("unet", options={"base_channels": 4, "num_classes": 6})


def test_stage_timings_add_up_to_end_to_end(model):
    images = np.zeros((2, 48, 64, 3), np.uint8)
    with TorchRunner(model, TorchConfig(), "fp32") as runner:
        measured = measure_cell(model, runner, images, warmup=1, iterations=5)
    assert len(measured.samples_ms) == 5
    stage_means = sum(stage["mean"] for stage in measured.stages_ms.values())
    assert stage_means == pytest.approx(measured.latency_ms["mean"], rel=1e-3)
    assert measured.latency_ms["min"] <= measured.latency_ms["p50"] <= measured.latency_ms["max"]
    assert measured.throughput_ips > 0
    assert measured.compute_ms is None  # CUDA events only on a GPU


def test_torch_and_onnxruntime_runners_agree(model, tmp_path):
    path = export_onnx(model, tmp_path / "unet.onnx")
    feeds = model.preprocess(np.random.default_rng(0).integers(0, 255, (3, 40, 56, 3), dtype=np.uint8))
    with TorchRunner(model, TorchConfig(), "fp32") as torch_runner:
        expected = torch_runner.infer(feeds)["logits"]
    with OnnxRuntimeRunner(model, OnnxRuntimeConfig(), "fp32", path) as ort_runner:
        actual = ort_runner.infer(feeds)["logits"]
        assert ort_runner.describe()["provider"] == "CPUExecutionProvider"
    assert actual.shape == (3, 6, 40, 56)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_peak_host_memory_sees_a_large_allocation():
    with PeakHostMemory() as baseline:
        pass
    with PeakHostMemory() as window:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del block
    assert window.peak_mb >= baseline.peak_mb + 60
    # The next window starts afresh: the 64 MiB peak above does not leak into it.
    with PeakHostMemory() as after:
        pass
    if after.method == "vmhwm":
        assert after.peak_mb < window.peak_mb - 30
