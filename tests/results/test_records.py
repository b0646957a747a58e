"""Typed records: the rows they write are the rows committed runs hold, and they read back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segbench.results.jsonl import JsonlWriter, read_jsonl, truncate_torn_tail
from segbench.results.records import (
    BASELINE,
    TENSOR,
    CapacityRecord,
    CellRecord,
    CheckRecord,
    Measurement,
    Provenance,
    Subject,
)

REPORTS = Path(__file__).resolve().parents[2] / "reports"
SUBJECT = Subject(
    "unet", "semantic", "onnxruntime", {"io_binding": True}, "cpu", "fp16", "trained", {"num_classes": 6}
)


def committed_rows(name: str) -> list[dict]:
    return [row for run in ("cpu-default", "cpu-ci-baseline") for row in read_jsonl(REPORTS / run / name)]


@pytest.mark.parametrize(
    "row", committed_rows("results.jsonl")[:12], ids=lambda r: f"{r['model']}-{r['backend']}"
)
def test_committed_cell_rows_read_back_and_write_the_same_row(row):
    assert CellRecord.from_dict(row).to_dict() == row


@pytest.mark.parametrize("row", committed_rows("numerics.jsonl"), ids=lambda r: f"{r['model']}-{r['metric']}")
def test_committed_check_rows_read_back_and_write_the_same_row(row):
    written = CheckRecord.from_dict(row).to_dict()
    # Old rows lack "verdict"; a record always has the key (None when the row had none).
    assert {key: value for key, value in written.items() if key in row or value is not None} == row


def test_a_failed_cell_keeps_its_error_and_no_numbers():
    record = CellRecord(SUBJECT, 32, 48, 2, Measurement.failed("RuntimeError: out of memory"), repeat=1)
    row = record.to_dict()
    assert row["status"] == "failed" and row["error"] == "RuntimeError: out of memory"
    assert row["latency_ms"] is None and row["samples_ms"] == [] and row["repeat"] == 1
    assert (row["height"], row["width"], row["batch_size"]) == (32, 48, 2)
    assert row["backend_options"] == {"io_binding": True} and row["model_options"] == {"num_classes": 6}
    assert "isolated" not in row  # only cells measured in a child say so
    assert CellRecord.from_dict(row) == record


def test_a_child_cell_joins_the_parent_run():
    child = CellRecord(SUBJECT, 32, 32, 1, Measurement(latency_ms={"p50": 1.0}), env=Provenance("child"))
    joined = child.stamped(Provenance("parent", "hash", "sha"), isolated=True)
    assert joined.to_dict()["env"] == {"fingerprint": "parent", "config_hash": "hash", "git_sha": "sha"}
    assert joined.to_dict()["isolated"] is True and joined.measurement == child.measurement


def test_check_records_keep_level_fields_flat():
    found = {"metric": "miou", "value": 70.0, "baseline": 70.5, "delta": -0.5, "tolerance": 1.0,
             "verdict": "pass", "passed": True, "ci_low": -0.8, "ci_high": -0.2, "images": 64}  # fmt: skip
    row = CheckRecord.of(SUBJECT, found).to_dict()
    assert row["ci_low"] == -0.8 and row["images"] == 64 and row["verdict"] == "pass"
    assert "weights" not in row and "model_options" not in row  # a check row names the backend entry only
    assert CheckRecord.from_dict(row).details == {"ci_low": -0.8, "ci_high": -0.2, "images": 64}


def test_a_check_that_could_not_run_fails_with_its_reason():
    record = CheckRecord.failed(SUBJECT, "miou", "ExportError: no kernel", baseline=71.0, tolerance=1.0)
    assert (record.verdict, record.passed, record.value, record.baseline) == ("fail", False, None, 71.0)
    assert record.closes_check  # resume counts the check as done
    assert not CheckRecord.of(SUBJECT, {"metric": "miou", "verdict": "pass"}).closes_check
    assert CheckRecord.of(SUBJECT, {"metric": "tensors"}, level=TENSOR).closes_check
    assert not CheckRecord.of(SUBJECT, {"metric": "miou"}, role=BASELINE, level=TENSOR).closes_check


def test_capacity_rows_name_the_search_outcome():
    row = CapacityRecord(SUBJECT, 64, 64, max_batch=12, limit=64, limit_reached=False, fails_at=13,
                         error="RuntimeError: out of memory").to_dict()  # fmt: skip
    assert (row["max_batch"], row["fails_at"], row["limit_reached"]) == (12, 13, False)
    assert row["model"] == "unet" and row["precision"] == "fp16"


def test_subject_key_ignores_option_order():
    a = Subject("m", "semantic", "b", {"x": 1, "y": 2}, "cpu", "fp32")
    b = Subject("m", "semantic", "b", {"y": 2, "x": 1}, "cpu", "fp32")
    assert a.key() == b.key()


def test_jsonl_writer_appends_whole_lines_and_a_torn_tail_is_cut(tmp_path):
    path = tmp_path / "rows.jsonl"
    with JsonlWriter(path) as writer:
        writer.write({"a": 1, "nan": float("nan")})
        writer.write({"a": 2})
    with path.open("a") as handle:
        handle.write('{"a": 3, "b"')  # killed mid-write
    assert read_jsonl(path) == [{"a": 1, "nan": None}, {"a": 2}]
    assert truncate_torn_tail(path) and not truncate_torn_tail(path)
    with JsonlWriter(path) as writer:
        writer.write({"a": 4})
    assert [json.loads(line)["a"] for line in path.read_text().splitlines()] == [1, 2, 4]


def test_a_bad_line_inside_the_file_is_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_jsonl(path)
