"""The pipeline's stages driven with a fake runner (tests/fakes/fake_backend.py): a failing cell, a failed
export, resume after a torn record, and runners closed on every path."""

from __future__ import annotations

import sys

import pytest

from segbench.bench.pipeline import run_benchmark
from segbench.export.onnx import ExportError
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import LOG_FILE, NUMERICS_FILE, RESULTS_FILE
from tests.fakes import fake_backend
from tests.fakes.configs import tiny_config


def make_config(backend: dict, numerics: bool = False, **extra) -> object:
    return tiny_config([backend], numerics, **extra)


@pytest.fixture
def fake():
    with fake_backend.registered():
        yield fake_backend.EVENTS


class RecordingListener:
    def __init__(self, fail_on_cell: bool = False) -> None:
        self.cells, self.checks, self.statuses, self.notes = [], [], [], []
        self.total, self.ended, self.fail_on_cell = None, False, fail_on_cell

    def begin(self, total):
        self.total = total

    def end(self):
        self.ended = True

    def status(self, text):
        self.statuses.append(text)

    def advance(self):
        pass

    def note(self, text):
        self.notes.append(text)

    def cell(self, record):
        self.cells.append(record)
        if self.fail_on_cell:
            raise RuntimeError("listener broke")

    def check(self, record):
        self.checks.append(record)


def test_a_failing_cell_is_recorded_with_its_traceback_and_the_run_goes_on(tmp_path, fake):
    listener = RecordingListener()
    config = make_config({"name": "fake", "fail_batches": [2]}, numerics=True)
    summary = run_benchmark(config, tmp_path, listeners=[listener])
    rows = read_jsonl(tmp_path / RESULTS_FILE)
    assert [(r["batch_size"], r["status"]) for r in rows] == [(1, "ok"), (2, "failed"), (3, "ok")]
    assert rows[1]["error"] == "RuntimeError: fake failure at batch 2"
    assert rows[1]["latency_ms"] is None and rows[0]["latency_ms"]["p50"] > 0
    log = (tmp_path / LOG_FILE).read_text()
    assert "Traceback" in log and "fake failure at batch 2" in log and "in infer" in log
    # The numerics check ran (batch 2 is its batch size too, so it failed with the same error).
    checks = [r for r in read_jsonl(tmp_path / NUMERICS_FILE) if r["role"] == "candidate"]
    assert checks and all(r["verdict"] == "fail" for r in checks)
    assert summary.exit_code == 1 and listener.total == 3 and listener.ended
    assert [c.measurement.status for c in listener.cells] == ["ok", "failed", "ok"]
    assert fake.count("activate") == fake.count("deactivate") == 1  # one runner served every cell


def test_the_fake_backend_passes_the_numerics_check(tmp_path, fake):
    summary = run_benchmark(make_config({"name": "fake"}, numerics=True), tmp_path)
    verdicts = {(c.level, c.metric): c.verdict for c in summary.checks if c.role == "candidate"}
    assert verdicts[("task", "miou")] == "pass"
    assert [verdict for (level, _), verdict in verdicts.items() if level == "tensor"] == ["pass"]
    assert summary.exit_code == 0
    assert {c.role for c in summary.checks} == {"baseline", "candidate"}


def test_the_device_and_driver_stages_of_a_unit_share_its_runner(tmp_path, fake):
    # The local executor hands a unit back with its runners still open: the numerics check and the batch
    # search use the runner the cells were timed on, opened once.
    sweep = {"input_sizes": ["32x32"], "batch_sizes": [1, 2], "find_max_batch": True, "max_batch_limit": 4}
    summary = run_benchmark(make_config({"name": "fake"}, numerics=True, sweep=sweep), tmp_path)
    assert len(summary.cells) == 2 and [r.max_batch for r in summary.capacity] == [4]
    assert any(c.role == "candidate" for c in summary.checks)
    assert fake == ["activate", "deactivate"]


def test_a_check_only_run_on_the_ray_executor_never_joins_a_cluster(tmp_path, fake, monkeypatch):
    from segbench.bench.executors import ray_executor

    def refuse(settings):
        raise AssertionError("a check-only run has no device work: it must not connect")

    monkeypatch.setattr(ray_executor, "connect", refuse)
    config = make_config({"name": "fake"}, numerics=True, executor={"kind": "ray"})
    summary = run_benchmark(config, tmp_path, timing=False)
    assert summary.exit_code == 0 and any(c.role == "candidate" for c in summary.checks)


@pytest.mark.slow
def test_a_failed_export_fails_every_cell_and_check_once(tmp_path, fake):
    calls = []

    def exporter(model, name, request, weights):
        calls.append(request)
        raise ExportError("Resize with this mode has no ONNX kernel")

    config = make_config({"name": "fake_graph", "opset": 17}, numerics=True)
    summary = run_benchmark(config, tmp_path, exporter=exporter)
    rows = read_jsonl(tmp_path / RESULTS_FILE)
    assert [r["status"] for r in rows] == ["failed"] * 3
    assert {r["error"] for r in rows} == {"ExportError: Resize with this mode has no ONNX kernel"}
    assert len(calls) == 1 and calls[0].opset == 17  # looked up once, its failure remembered
    checks = [r for r in read_jsonl(tmp_path / NUMERICS_FILE) if r["role"] == "candidate"]
    assert {r["metric"] for r in checks} == {"miou", "pixel_accuracy", "mean_dice"}
    assert all(r["verdict"] == "fail" and "no ONNX kernel" in r["error"] for r in checks)
    assert (tmp_path / LOG_FILE).read_text().count("Traceback") == 1
    assert summary.exit_code == 1 and fake == []  # no runner was ever opened


@pytest.mark.slow
def test_resume_after_a_torn_record_reruns_only_that_cell(tmp_path, fake):
    config = make_config({"name": "fake"})
    run_benchmark(config, tmp_path)
    results = tmp_path / RESULTS_FILE
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:2]) + lines[2][:40])  # killed while writing the third cell
    kept = read_jsonl(results)
    assert len(kept) == 2  # the torn line is not a record
    summary = run_benchmark(config, tmp_path, resume=True)
    rows = read_jsonl(results)
    assert [r["batch_size"] for r in rows] == [1, 2, 3] and rows[:2] == kept
    assert [c.batch_size for c in summary.cells] == [3]


def test_every_runner_is_closed_when_a_stage_raises(tmp_path, fake):
    listener = RecordingListener(fail_on_cell=True)
    with pytest.raises(RuntimeError, match="listener broke"):
        run_benchmark(make_config({"name": "fake"}), tmp_path, listeners=[listener])
    assert fake == ["activate", "deactivate"] and listener.ended
    assert len(read_jsonl(tmp_path / RESULTS_FILE)) == 1  # the record was on disk before the listener


def test_an_unavailable_backend_is_skipped_with_its_reason(tmp_path, fake, monkeypatch):
    from dataclasses import replace

    from segbench.backends import BACKENDS

    monkeypatch.setitem(BACKENDS, "fake", replace(BACKENDS["fake"], unavailable=lambda c: "no fake GPU"))
    listener = RecordingListener()
    summary = run_benchmark(make_config({"name": "fake"}), tmp_path, listeners=[listener])
    assert summary.skipped_backends == [{"backend": "fake", "device": "cpu", "reason": "no fake GPU"}]
    assert listener.notes == ["skipping fake on cpu: no fake GPU"] and summary.cells == []


def test_runs_in_one_process_keep_separate_logs(tmp_path, fake):
    first, second = tmp_path / "a", tmp_path / "b"
    run_benchmark(make_config({"name": "fake", "fail_batches": [1]}), first)
    run_benchmark(make_config({"name": "fake", "fail_batches": [3]}), second)
    assert "batch 1" in (first / LOG_FILE).read_text() and "batch 3" not in (first / LOG_FILE).read_text()
    assert "batch 3" in (second / LOG_FILE).read_text()


if sys.platform == "win32":  # pragma: no cover - os._exit in a child is what the crash test relies on
    pytestmark = pytest.mark.skip("POSIX only")
