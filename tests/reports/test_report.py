"""segbench report: CSV / Parquet / Markdown / self-contained HTML / PNG plots from a run's results."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from segbench.cli import main
from segbench.reports.report import (
    NUMERICS_CSV,
    REPORT_HTML,
    REPORT_MD,
    RESULTS_CSV,
    RESULTS_PARQUET,
    write_report,
)
from segbench.reports.rundata import load_run
from tests.fakes.runs import cell, check, write_run

DEFAULT_RUN = Path(__file__).parents[2] / "reports" / "cpu-default"
CI_BASELINE = Path(__file__).parents[2] / "reports" / "cpu-ci-baseline"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path):
    results = [
        cell("unet", "torch", 1, samples=[20.0, 21.0, 20.5, 20.2]),
        cell("unet", "torch", 4, samples=[70.0, 71.0, 70.5, 70.2]),
        cell("unet", "onnxruntime", 1, samples=[10.0, 10.4, 10.1, 10.3]),
        cell("unet", "onnxruntime", 4, status="failed"),
    ]
    numerics = [check(role="baseline", backend="torch"), check(value=74.9), check(metric="pq", passed=False)]
    return write_run(tmp_path / "run", results, numerics)


class _Resources(HTMLParser):
    """Every tag and every attribute that could make a browser fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.sources: list[str] = []
        self.links: list[str] = []
        self.rows: list[tuple[str | None, list[str]]] = []
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attributes = dict(attrs)
        for name in ("src", "srcset", "data", "poster"):
            if name in attributes:
                self.sources.append(attributes[name])
        if "href" in attributes:
            self.links.append(attributes["href"])
        if tag == "tr":
            self._row = []
            self.rows.append((attributes.get("class"), self._row))

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())


def test_every_file_is_written_and_parses_back(run_dir):
    run = load_run(run_dir)
    written = write_report(run)
    names = {path.relative_to(run_dir).as_posix() for path in written}
    assert {RESULTS_CSV, RESULTS_PARQUET, NUMERICS_CSV, REPORT_MD, REPORT_HTML} <= names
    assert {"plots/latency_vs_batch.png", "plots/numerics_verdicts.png"} <= names
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes().startswith(PNG_SIGNATURE)

    cells = run.cells
    parquet = pd.read_parquet(run_dir / RESULTS_PARQUET)
    assert list(parquet.columns) == list(cells.columns)
    assert parquet["samples_ms"].map(list).tolist() == cells["samples_ms"].tolist()
    pd.testing.assert_series_equal(parquet["p50_ms"], cells["p50_ms"])

    csv = pd.read_csv(run_dir / RESULTS_CSV)
    assert len(csv) == 4 and list(csv.columns) == list(cells.columns)
    assert csv["samples_ms"].map(json.loads).tolist() == cells["samples_ms"].tolist()
    assert csv["p50_ms"].tolist()[:3] == pytest.approx(cells["p50_ms"].tolist()[:3])
    # The failed cell has no measurement: empty in the CSV, never a zero.
    failed = csv[csv["status"] == "failed"].iloc[0]
    assert pd.isna(failed["p50_ms"]) and pd.isna(failed["throughput_ips"])
    assert failed["error"] == "RuntimeError: out of memory"

    numerics = pd.read_csv(run_dir / NUMERICS_CSV)
    assert numerics["metric"].tolist() == ["miou", "miou", "pq"]
    assert numerics["passed"].tolist() == [True, True, False]


def test_markdown_shows_failures_as_failures(run_dir):
    write_report(load_run(run_dir))
    markdown = (run_dir / REPORT_MD).read_text()
    assert "**4 cells (1 failed), 2 numerics checks (1 failed, 0 inconclusive): FAILURES**" in markdown
    failed_line = next(line for line in markdown.splitlines() if "failed: RuntimeError" in line)
    assert failed_line.startswith("| unet | onnxruntime | cpu | fp32 | 256x256 | 4 | - | - | - | - |")
    # The speed-up column: PyTorch fp32 p50 / onnxruntime p50 at batch 1.
    ok_row = "| unet | onnxruntime | cpu | fp32 | 256x256 | 1 |"
    ok_line = next(line for line in markdown.splitlines() if line.startswith(ok_row))
    assert "| 2.00x |" in ok_line
    assert "![" in markdown and "](plots/latency_vs_batch.png)" in markdown
    assert "| pq |" in markdown and "FAIL" in markdown


def test_html_is_self_contained(run_dir):
    write_report(load_run(run_dir))
    page = (run_dir / REPORT_HTML).read_text()
    parser = _Resources()
    parser.feed(page)
    # One inline script (sorting and filtering); nothing the page would fetch.
    assert not {"link", "iframe", "object", "embed", "base"} & set(parser.tags)
    assert parser.tags.count("script") == 1 and "<script src" not in page
    assert parser.links == []
    assert parser.sources, "the plots should be embedded as images"
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    assert "url(" not in page and "@import" not in page and "http://" not in page and "https://" not in page
    failed = [cells for css, cells in parser.rows if css == "fail"]
    assert any("failed: RuntimeError: out of memory" in cells for cells in failed)
    assert any("FAIL" in cells for cells in failed)


@pytest.mark.slow
def test_report_command_re_renders_a_committed_run(tmp_path, capsys):
    run = tmp_path / "cpu-default"
    derived = shutil.ignore_patterns("onnx", "plots", "report.*", "*.csv", "*.parquet")
    shutil.copytree(DEFAULT_RUN, run, ignore=derived)
    assert main(["report", str(run)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert len(pd.read_parquet(run / RESULTS_PARQUET)) == 46
    first = (run / REPORT_MD).read_text()
    assert "46 cells (0 failed)" in first
    # Re-rendering from the same results gives the same report.
    assert main(["report", str(run), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / REPORT_MD).read_text() == first


def test_a_run_with_numerics_only_still_reports(tmp_path):
    run = write_run(tmp_path / "check", [], [check(role="baseline", backend="torch"), check()])
    (run / "results.jsonl").unlink()
    written = write_report(load_run(run))
    assert (run / REPORT_HTML) in written
    summary = "0 cells (0 failed), 1 numerics checks (0 failed, 0 inconclusive): all passed"
    assert summary in (run / REPORT_MD).read_text()


def _three_verdicts(tmp_path):
    """A run whose checks are written the new way: one pass, one confident fail, one inconclusive."""
    numerics = [
        check(role="baseline", backend="torch", verdict="pass"),
        check(metric="miou", value=75.1, verdict="pass", ci=(-0.1, 0.3)),
        check(metric="pixel_accuracy", value=92.0, baseline=93.0, verdict="fail", ci=(-1.4, -0.7)),
        check(metric="mean_dice", value=74.8, verdict="inconclusive", ci=(-0.7, 0.3), images_needed=140),
    ]
    return write_run(tmp_path / "three", [cell()], numerics)


def test_report_counts_inconclusive_apart_from_pass_and_fail(tmp_path):
    run_dir = _three_verdicts(tmp_path)
    write_report(load_run(run_dir))
    markdown = (run_dir / REPORT_MD).read_text()
    assert "**1 cells (0 failed), 3 numerics checks (1 failed, 1 inconclusive): FAILURES**" in markdown
    lines = markdown.splitlines()
    dice = next(line for line in lines if "| mean_dice |" in line)
    assert (
        "| [-0.700, +0.300] | [-0.50, +0.50] | 32 (0 moved) | inconclusive (~140 images would decide) |"
        in dice
    )
    accuracy = next(line for line in lines if "| pixel_accuracy |" in line)
    assert "| [-1.400, -0.700] |" in accuracy and accuracy.endswith("| FAIL |")
    parser = _Resources()
    parser.feed((run_dir / REPORT_HTML).read_text())
    # Each verdict its own row class (and colour): pass, FAIL, inconclusive, and the baseline.
    classes = [css for css, cells in parser.rows if "task" in cells]
    assert classes == ["info", "ok", "fail", "inconclusive"]
    numerics = pd.read_csv(run_dir / NUMERICS_CSV)
    assert numerics["verdict"].tolist() == ["pass", "pass", "fail", "inconclusive"]
    assert numerics["passed"].isna().tolist() == [False, False, False, True]
    # Only a run with nothing failed but something inconclusive says so.
    only = write_run(tmp_path / "only", [cell()], [check(verdict="inconclusive", ci=(-0.7, 0.3))])
    write_report(load_run(only))
    assert "1 numerics checks (0 failed, 1 inconclusive): INCONCLUSIVE**" in (only / REPORT_MD).read_text()


def test_old_rows_with_paired_and_no_verdict_still_load(tmp_path):
    paired = {"mean": -0.05, "ci_low": -0.13, "ci_high": 0.0, "images": 29, "changed": 2, "worst": []}
    rows = [
        check(role="baseline", backend="torch"),
        check(metric="segm_ap", value=60.2, baseline=60.9, passed=False, tolerance=1.5, paired=paired),
        {**check(level="diagnosis", metric="fp16 diagnosis", value=None, baseline=None), "passed": None},
    ]
    checks = load_run(write_run(tmp_path / "old", [cell()], rows)).checks
    old = checks.iloc[1]
    assert old["verdict"] == "fail" and (old["ci_low"], old["ci_high"]) == (-0.13, 0.0)
    assert (old["images"], old["changed"]) == (29, 2)
    # The band rebuilt from the tolerance and the 99% floor: max(-1.5, -0.01 x 60.9).
    assert old["band_low"] == pytest.approx(-0.609) and old["band_high"] == 1.5
    assert checks.iloc[0]["verdict"] == "pass" and pd.isna(checks.iloc[2]["verdict"])
    # The committed CI baseline is such an old run: every candidate task row gets a verdict and an interval.
    committed = load_run(CI_BASELINE).checks
    tasks = committed[(committed["role"] == "candidate") & (committed["level"] == "task")]
    assert len(tasks) and set(tasks["verdict"]) == {"pass"} and tasks["ci_low"].notna().all()
    assert not (CI_BASELINE / "numerics.jsonl").read_text().count('"verdict"')  # really old rows
    # The committed default run has new rows: the same columns, read as written.
    current = load_run(DEFAULT_RUN).checks
    tasks = current[(current["role"] == "candidate") & (current["level"] == "task")]
    assert set(tasks["verdict"]) == {"pass"} and (tasks["ci_low"] <= tasks["delta"]).all()
    assert (tasks["band_low"] <= tasks["ci_low"]).all() and (tasks["ci_high"] <= tasks["band_high"]).all()


def test_the_rates_show_in_the_tables_and_the_peak_in_the_facts(tmp_path):
    measured = cell("unet", "torch", 4, samples=[40.0, 40.0, 40.0], gflops=2.0, achieved_tflops=0.2,
                    peak_fraction=0.4)  # fmt: skip
    run_dir = write_run(tmp_path / "run", [measured, cell("unet", "torch", 1, status="failed")])
    env = json.loads((run_dir / "env.json").read_text())
    (run_dir / "env.json").write_text(json.dumps({**env, "peak_tflops": {"cpu": {"fp32": 0.5}}}))
    write_report(load_run(run_dir))
    markdown = (run_dir / REPORT_MD).read_text()
    assert (
        "| TFLOP/s | of peak |" in markdown
        and "| measured peak (matmul, TFLOP/s) | cpu fp32 0.500 |" in markdown
    )
    assert "| 0.200 | 40.0% |" in markdown and (run_dir / "plots" / "roofline.png").exists()
    failed = next(line for line in markdown.splitlines() if "failed: RuntimeError" in line)
    assert "| - | - | - | - | - | - |" in failed  # p50 .. of peak: missing, never zero


def test_an_old_run_without_the_rates_still_renders(tmp_path):
    old = shutil.copytree(CI_BASELINE, tmp_path / "old")
    assert "achieved_tflops" not in (old / "results.jsonl").read_text()
    write_report(load_run(old))
    markdown = (old / REPORT_MD).read_text()
    assert "| measured peak (matmul, TFLOP/s) | - |" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| fcn8s | torch | cpu | fp32 | 256")]
    assert rows and all("| reference | - | - |" in line for line in rows)
    assert not (old / "plots" / "roofline.png").exists()


def test_a_graph_whose_export_info_has_an_empty_mapping_still_writes_its_parquet(tmp_path):
    """An fp16 graph with nothing kept in fp32 records ``kept_fp32: {}``: Arrow cannot write a struct with
    no fields, so mapping columns go to Parquet as JSON text, and read back as they were written."""
    export = {"path": "unet-fp16.onnx", "fp16": {"kept_fp32": {}, "fp16_nodes": 12}}
    results = [
        cell("unet", "onnxruntime", 1, precision="fp16", artifact=export),
        cell("unet", "onnxruntime", 1, artifact={"path": "unet.onnx"}),
    ]
    run = write_run(tmp_path / "run", results)
    assert main(["report", str(run)]) == 0
    table = pd.read_parquet(run / RESULTS_PARQUET)
    assert [json.loads(text) for text in table["artifact"]] == [export, {"path": "unet.onnx"}]
