import time

import numpy as np
import pytest

from segbench.backends.onnxruntime_backend import OnnxRuntimeConfig, OnnxRuntimeRunner
from segbench.backends.torch_backend import TorchConfig, TorchRunner
from segbench.bench.harness import TimingPlan, latency_stats, measure_cell
from segbench.bench.memory import PeakHostMemory
from segbench.models import build_model
from tests.fakes.configs import TINY_UNET


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
    return build_model("unet", options=TINY_UNET)  # the model of the tiny_unet_graph fixture


def test_stage_timings_add_up_to_end_to_end(model):
    images = np.zeros((2, 48, 64, 3), np.uint8)
    with TorchRunner(model, TorchConfig(), "fp32") as runner:
        measured = measure_cell(model, runner, images, TimingPlan(warmup=1, iterations=5))
    assert len(measured.samples_ms) == 5 and measured.warmup == 1 and measured.first_iteration_ms > 0
    assert set(measured.stages_ms) == {"preprocess", "infer", "postprocess"}  # no device stages on a CPU
    stage_means = sum(stage["mean"] for stage in measured.stages_ms.values())
    assert stage_means == pytest.approx(measured.latency_ms["mean"], rel=1e-3)
    assert measured.latency_ms["min"] <= measured.latency_ms["p50"] <= measured.latency_ms["max"]
    assert measured.throughput_ips > 0
    assert measured.compute_ms is None  # CUDA events only on a GPU


@pytest.mark.slow
def test_torch_and_onnxruntime_runners_agree(model, tiny_unet_graph):
    path = tiny_unet_graph().path
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


class FakeDeviceRunner:
    """A runner that reports a device split of each infer, as the CUDA runners do."""

    def __init__(self):
        self.calls = 0
        self.last_stages_ms = None

    def infer(self, feeds):
        self.calls += 1
        time.sleep(0.002)
        self.last_stages_ms = {"h2d": 0.5, "compute": 1.0, "d2h": 0.25}
        return {"logits": np.zeros((1, 6, 8, 8), np.float32)}


def test_device_stages_lie_inside_infer_and_time_plans_are_honoured(model):
    images = np.zeros((1, 8, 8, 3), np.uint8)
    runner = FakeDeviceRunner()
    measured = measure_cell(model, runner, images, TimingPlan(warmup=1, iterations=3, warmup_s=0.05,
                                                              min_duration_s=0.1))  # fmt: skip
    # Warm-up and measurement ran past their counts until their durations were reached.
    assert measured.warmup > 1 and measured.iterations > 3
    assert runner.calls == measured.warmup + measured.iterations
    split = sum(measured.stages_ms[s]["mean"] for s in ("h2d", "compute", "d2h"))
    assert split == pytest.approx(1.75) and split <= measured.stages_ms["infer"]["mean"]
    assert measured.compute_ms["p50"] == 1.0
    capped = measure_cell(model, runner, images, TimingPlan(warmup=0, iterations=2, min_duration_s=60,
                                                            max_iterations=4))  # fmt: skip
    assert capped.iterations == 4 and capped.first_iteration_ms is None


@pytest.mark.slow
def test_overhead_benchmark_script_prints_the_ratio():
    """The script measures and prints; the 2% bar is read from its output in the report, not asserted."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_harness_overhead.py"
    argv = [sys.executable, str(script), "--size", "64", "--iterations", "5", "--rounds", "1"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    ratio = [line for line in proc.stdout.splitlines() if line.startswith("ratio segbench / bare: ")]
    assert len(ratio) == 1 and float(ratio[0].rsplit(" ", 1)[1]) > 0


class HostTimedRunner(FakeDeviceRunner):
    """A runner that can only time its forward on the host, as onnxruntime's I/O binding run."""

    def infer(self, feeds):
        result = super().infer(feeds)
        self.last_stages_ms = {"h2d": 0.5, "run_host": 2.0, "d2h": 0.25, "unknown": 9.0}
        return result


def test_a_host_timed_forward_is_its_own_stage_never_compute(model):
    from segbench.reports.rundata import cells_frame
    from tests.fakes.runs import cell

    measured = measure_cell(model, HostTimedRunner(), np.zeros((1, 8, 8, 3), np.uint8), TimingPlan(1, 3))
    assert set(measured.stages_ms) == {"preprocess", "infer", "postprocess", "h2d", "run_host", "d2h"}
    assert measured.stages_ms["run_host"]["p50"] == 2.0
    assert measured.compute_ms is None  # compute_ms is device-event time only
    # The reports read the stage as its own column, next to compute.
    row = cell(backend="onnxruntime", stages_ms=measured.stages_ms, compute_ms=None)
    frame = cells_frame([row])
    assert frame["run_host_p50_ms"].iloc[0] == 2.0 and np.isnan(frame["compute_p50_ms"].iloc[0])
