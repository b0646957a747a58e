"""achieved_tflops and peak_fraction in a cell's row: written when measured, absent otherwise, and read
back from rows written before they existed."""

from __future__ import annotations

from segbench.results.records import CellRecord, Measurement, Subject

SUBJECT = Subject("unet", "semantic", "torch", {}, "cpu", "fp32", "trained", {"base_channels": 8})


def test_measured_rates_round_trip():
    record = CellRecord(
        SUBJECT, 256, 256, 4, Measurement(latency_ms={"p50": 40.0}), gflops=1.5, achieved_tflops=0.15,
        peak_fraction=0.5,
    )  # fmt: skip
    row = record.to_dict()
    assert (row["achieved_tflops"], row["peak_fraction"]) == (0.15, 0.5)
    assert CellRecord.from_dict(row) == record


def test_a_row_without_them_reads_as_none_and_writes_without_them():
    row = CellRecord(SUBJECT, 256, 256, 1, Measurement.failed("RuntimeError: out of memory")).to_dict()
    assert "achieved_tflops" not in row and "peak_fraction" not in row
    old = CellRecord.from_dict(row)
    assert old.achieved_tflops is None and old.peak_fraction is None
    assert old.to_dict() == row
