"""The peak measurement and the achieved-FLOP/s arithmetic, with constructed measurements (no timing
values are asserted)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from segbench.backends.torch_backend import TorchConfig
from segbench.bench import peak
from segbench.bench.context import ModelState
from segbench.bench.pipeline import run_benchmark
from segbench.bench.plan import Cell
from segbench.bench.stages.timing import cell_record
from segbench.config import ModelEntry
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import ENV_FILE, RESULTS_FILE
from segbench.results.records import CellRecord, Measurement, Provenance
from tests.bench.test_pipeline import make_config
from tests.fakes import fake_backend


def test_matmul_flops_count_a_multiply_add_as_two():
    assert peak.matmul_flops(1000) == 2e9


def test_the_fastest_repeat_sets_the_peak():
    # 2e12 FLOPs: 2 s is 1 TFLOP/s, 1 s is 2 TFLOP/s; noise only adds time, so the fastest counts.
    assert peak.best_rate_tflops(2e12, [2.0, 1.0, 4.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        peak.best_rate_tflops(2e12, [])
    with pytest.raises(ValueError):
        peak.rate_tflops(1.0, 0.0)


def test_cpu_peak_times_repeats_until_the_budget_with_the_given_clock():
    ticks = iter(float(t) for t in range(1000))  # each clock read is a second later
    rate = peak.cpu_peak_tflops(n=8, budget_s=5.0, min_repeats=2, clock=lambda: next(ticks))
    # Every repeat reads the clock twice (1 s apart): the best is one second per 2 x 8^3 FLOPs.
    assert rate == pytest.approx(peak.matmul_flops(8) / 1e12)


def test_cpu_peak_is_a_positive_rate():
    assert peak.cpu_peak_tflops(n=64, budget_s=0.0, min_repeats=2) > 0


def test_measure_peaks_covers_the_devices_asked_for(monkeypatch):
    monkeypatch.setattr(peak, "_measured", lambda device, precision, threads: {"fp32": 0.1}[precision])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    peaks, errors = peak.measure_peaks(["cpu", "cpu"])
    assert peaks == {"cpu": {"fp32": 0.1}} and errors == {}
    # No CUDA device torch can see: no peak, and no error (its cells simply get no fraction).
    assert peak.measure_peaks(["cuda"]) == ({}, {})


def test_a_failed_measurement_is_noted_not_raised(monkeypatch):
    def broken(device, precision, threads):
        raise RuntimeError("CUBLAS_STATUS_NOT_INITIALIZED\nmore")

    monkeypatch.setattr(peak, "_measured", broken)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    peaks, errors = peak.measure_peaks(["cuda"])
    assert set(errors) == {f"cuda/{p}" for p in peak.CUDA_PRECISIONS}
    assert errors["cuda/fp16"] == "RuntimeError: CUBLAS_STATUS_NOT_INITIALIZED"
    assert peaks == {}


def test_cuda_peak_refuses_an_unknown_precision():
    with pytest.raises(ValueError, match="int8"):
        peak.cuda_peak_tflops("int8")


def test_achieved_is_flops_times_batch_over_time():
    # 10 GFLOPs per image, batch 4, 40 ms: 40 GFLOP / 0.04 s = 1 TFLOP/s.
    assert peak.achieved_tflops(10.0, 4, 40.0) == pytest.approx(1.0)
    assert peak.achieved_tflops(None, 4, 40.0) is None
    assert peak.achieved_tflops(10.0, 4, None) is None
    assert peak.peak_fraction(1.0, 4.0) == pytest.approx(0.25)
    assert peak.peak_fraction(1.0, None) is None and peak.peak_fraction(None, 4.0) is None


def test_the_roof_of_a_cell():
    # An fp32 CUDA cell allowing TF32 runs on TF32 tensor cores; the CPU has one roof, fp32.
    assert peak.roof_precision("cuda", "fp32", {"tf32": True}) == "tf32"
    assert peak.roof_precision("cuda", "fp32", {}) == "fp32"
    assert peak.roof_precision("cuda", "fp16", {}) == "fp16"
    assert peak.roof_precision("cpu", "fp16", {}) == "fp32"


PEAKS = {"cpu": {"fp32": 0.5}, "cuda": {"fp32": 50.0, "tf32": 100.0}}


def _record(
    measurement: Measurement,
    device: str = "cpu",
    gflops: float | None = 2.0,
    tf32: bool = False,
    peaks: dict | None = None,
) -> CellRecord:
    """cell_record of a unet cell, 256x256 batch 4, whose model counts ``gflops`` per image."""
    state = ModelState(
        ModelEntry(name="unet"), "semantic", {}, stats={(256, 256): {"params": 1, "gflops": gflops}}
    )
    unit = SimpleNamespace(backend=TorchConfig(device=device, tf32=tf32), precision="fp32", repeat=0)
    ctx = SimpleNamespace(provenance=Provenance(), peak_tflops=PEAKS if peaks is None else peaks)
    return cell_record(ctx, state, unit, Cell(256, 256, 4), measurement)


def test_a_cpu_cell_divides_by_the_end_to_end_p50():
    # 2 GFLOPs x 4 images / 40 ms = 0.2 TFLOP/s, 40% of the 0.5 TFLOP/s CPU peak.
    record = _record(Measurement(latency_ms={"p50": 40.0, "mean": 41.0}))
    assert record.achieved_tflops == pytest.approx(0.2)
    assert record.peak_fraction == pytest.approx(0.4)


def test_a_device_cell_divides_by_its_compute_p50():
    measured = Measurement(latency_ms={"p50": 80.0}, compute_ms={"p50": 0.16})
    # 8 GFLOP / 0.16 ms = 50 TFLOP/s: all of the fp32 peak, half of the TF32 one.
    assert _record(measured, device="cuda").achieved_tflops == pytest.approx(50.0)
    assert _record(measured, device="cuda").peak_fraction == pytest.approx(1.0)
    assert _record(measured, device="cuda", tf32=True).peak_fraction == pytest.approx(0.5)


def test_no_rate_without_a_flop_count_or_a_measurement():
    assert _record(Measurement(latency_ms={"p50": 40.0}), gflops=None).achieved_tflops is None
    failed = _record(Measurement.failed("RuntimeError: out of memory"))
    assert failed.achieved_tflops is None and failed.peak_fraction is None


def test_no_fraction_without_a_peak():
    # A resumed run whose env.json predates the peaks: the rate, no fraction.
    record = _record(Measurement(latency_ms={"p50": 40.0}), peaks={})
    assert record.achieved_tflops == pytest.approx(0.2) and record.peak_fraction is None


@pytest.mark.slow
def test_a_run_records_its_peaks_and_every_ok_cell_its_share(tmp_path, monkeypatch):
    monkeypatch.setattr(peak, "_measured", lambda device, precision, threads: 0.25)
    with fake_backend.registered():
        run_benchmark(make_config({"name": "fake", "fail_batches": [2]}), tmp_path)
    env = json.loads((tmp_path / ENV_FILE).read_text())
    assert env["peak_tflops"] == {"cpu": {"fp32": 0.25}}
    ok, failed, _ = read_jsonl(tmp_path / RESULTS_FILE)
    # GFLOPs x images / ms = TFLOP/s (1e9 / 1e-3 / 1e12).
    expected = ok["gflops"] * ok["batch_size"] / ok["latency_ms"]["p50"]
    assert ok["achieved_tflops"] == pytest.approx(expected)
    assert ok["peak_fraction"] == pytest.approx(expected / 0.25)
    assert failed["status"] == "failed" and "achieved_tflops" not in failed


def test_the_flop_rate_divides_by_the_same_kind_of_time_on_every_backend():
    """Device events where the runner has them (torch, TensorRT), the host time of the device run where it
    has none (onnxruntime's run_host), end to end for a host backend; the row says which."""
    from segbench.bench.stages.timing import flops_time_of
    from segbench.results.records import CellRecord, Measurement

    latency = {"p50": 10.0}
    events = Measurement(latency_ms=latency, compute_ms={"p50": 4.0}, stages_ms={"compute": {"p50": 4.0}})
    host_run = Measurement(latency_ms=latency, stages_ms={"h2d": {"p50": 0.5}, "run_host": {"p50": 6.0}})
    host_backend = Measurement(latency_ms=latency, stages_ms={"infer": {"p50": 8.0}})
    assert flops_time_of(events) == ("compute", {"p50": 4.0})
    assert flops_time_of(host_run) == ("run_host", {"p50": 6.0})
    assert flops_time_of(host_backend) == ("end_to_end", latency)
    row = {"model": "unet", "backend": "onnxruntime", "device": "cuda", "precision": "fp32", "height": 8,
           "width": 8, "batch_size": 1, "status": "ok", "flops_time": "run_host"}  # fmt: skip
    assert CellRecord.from_dict(row).flops_time == "run_host"
    assert CellRecord.from_dict(row).to_dict()["flops_time"] == "run_host"
