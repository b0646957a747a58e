"""Terminal tables in 80 columns (what rich assumes when stdout is piped) and the run's outcome line."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from segbench.reports.tables import (
    models_table,
    numerics_table,
    outcome_line,
    results_table,
    text_table,
)
from segbench.reports.termtable import FitTable
from tests.fakes.runs import cell, check

LONG_BACKEND = {"intra_op_num_threads": 2, "execution_mode": "parallel"}


def render(table: FitTable, width: int = 80) -> list[str]:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.file.getvalue().splitlines()


def whole(lines: list[str], *words: str) -> bool:
    """Some line holds every one of ``words`` as a whole, space-delimited word."""
    return any(all(re.search(rf"(^|\s){re.escape(w)}(\s|$)", line) for w in words) for line in lines)


def grid() -> list[dict]:
    rows = []
    for model in ("mask2former", "mask_rcnn", "unet"):
        for backend, options in (("torch", None), ("onnxruntime", None), ("onnxruntime", LONG_BACKEND)):
            for precision in ("fp32", "fp16"):
                rows.append(cell(model, backend, batch=16, size=1024, precision=precision, options=options))
    rows.append(cell("mask2former", "onnxruntime", batch=4, status="failed", device="cuda"))
    return rows


def verdict_rows() -> list[dict]:
    tensor = check(
        model="mask2former", metric="tensors (max_rel_err:class_logits)", level="tensor", value=3e-4,
        baseline=None, tolerance=1e-3, verdict="pass",
    )  # fmt: skip
    return [
        check(model="mask2former", backend="torch", role="baseline", metric="pixel_accuracy", verdict="pass"),
        check(model="mask2former", metric="pixel_accuracy", value=74.9, verdict="pass", ci=(-0.2, 0.1)),
        check(
            model="mask_rcnn",
            metric="bbox_ap",
            value=52.1,
            baseline=52.5,
            tolerance=0.2,
            precision="fp16",
            verdict="fail",
            ci=(-0.6, -0.25),
        ),
        check(
            model="mask_rcnn",
            metric="segm_ap",
            value=60.6,
            baseline=60.9,
            tolerance=1.0,
            verdict="inconclusive",
            ci=(-1.2, 0.4),
            images_needed=180,
        ),
        tensor,
        check(
            model="unet", metric="miou", value=None, passed=False, error="RuntimeError: export failed " * 4
        ),
    ]


def test_results_table_keeps_key_columns_whole_in_80_columns():
    rows = grid()
    lines = render(results_table(rows))
    assert max(len(line) for line in lines) <= 80
    assert "…" not in "\n".join(lines)
    for row in rows:
        status = "ok" if row["status"] == "ok" else "failed"
        assert whole(lines, row["model"], row["precision"], f"{row['height']}x{row['width']}", status), row
    # The backend with its options wraps between words at most: every word of it is there, whole.
    for word in ("onnxruntime", "(intra_op_num_threads=2,", "execution_mode=parallel)"):
        assert whole(lines, word)
    # The numbers that are shown are whole too; p50 outlives the less important columns.
    header = " ".join(lines[1:4])
    assert "p50" in header and "mean" not in header


def test_numerics_table_keeps_key_columns_whole_in_80_columns():
    rows = verdict_rows()
    lines = render(numerics_table(rows))
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 80 and "…" not in text
    assert whole(lines, "mask2former", "torch", "fp32", "pixel_accuracy", "baseline")
    assert whole(lines, "mask2former", "onnxruntime", "fp32", "pixel_accuracy", "pass")
    assert whole(lines, "mask_rcnn", "onnxruntime", "fp16", "bbox_ap", "FAIL")
    assert whole(lines, "mask_rcnn", "onnxruntime", "fp32", "segm_ap", "inconclusive")
    assert whole(lines, "mask2former", "tensors", "(max_rel_err:class_logits)", "pass")
    assert whole(lines, "unet", "miou", "FAIL")


def test_numerics_table_shows_the_deviation_its_interval_and_the_band_when_there_is_room():
    lines = render(numerics_table(verdict_rows()), width=220)
    bbox = next(line for line in lines if "bbox_ap" in line)
    assert "-0.400" in bbox and "[-0.600, -0.250]" in bbox and "[-0.20, +0.20]" in bbox
    assert "32 (0 moved)" in bbox  # the images column as in report.md
    segm = next(line for line in lines if "segm_ap" in line)
    assert "inconclusive" in segm and "~180 images would decide" in segm
    # An old row: its interval from ``paired``, its band rebuilt from the tolerance and the floor.
    paired = {"mean": -0.05, "ci_low": -0.13, "ci_high": 0.0, "images": 29, "changed": 2, "worst": []}
    old = check(metric="segm_ap", value=60.2, baseline=60.9, passed=True, tolerance=1.5, paired=paired)
    (line,) = [line for line in render(numerics_table([old]), width=200) if "segm_ap" in line]
    assert "[-0.130, +0.000]" in line and "[-0.61, +1.50]" in line and "29" in line and "pass" in line


@pytest.mark.parametrize("width", [80, 100, 132])
def test_models_table_keeps_names_whole(width):
    rows = [
        {"name": name, "task": task, "weights": weights, "options": "num_classes=7, " * 6,
         "params": 44.45e6, "gflops": None, "validation": "mask AP 57.8",
         "description": "Mask R-CNN (torchvision), static-shape deploy graph " * 2}
        for name, task in (("mask_rcnn", "instance"), ("mask2former", "panoptic"))
        for weights in ("random", "trained")
    ]  # fmt: skip
    lines = render(models_table(rows, 512, 512), width)
    assert max(len(line) for line in lines) <= width and "…" not in "\n".join(lines)
    for row in rows:
        assert whole(lines, row["name"], row["task"], row["weights"], "44.45")


def test_too_narrow_for_the_key_columns_folds_them_rather_than_cutting():
    table = numerics_table(verdict_rows())
    built = table.build(30)
    assert [c.header for c in built.columns] == ["model", "backend", "prec", "metric", "verdict"]
    assert {c.overflow for c in built.columns} == {"fold"}
    assert "…" not in "\n".join(render(table, width=30))


def test_compare_tables_keep_the_cell_and_the_verdict_whole():
    headers = ("cell", "baseline p50 ms", "current p50 ms", "p50 change", "throughput change",
               "p (slower)", "p (faster)", "samples", "memory", "verdict")  # fmt: skip
    label = "mask2former onnxruntime cpu fp16 1024x1024 b16"
    verdict = "within noise: past the threshold, not significant (p=0.093)"
    row = [label, "184.02", "199.32", "+8.3%", "-7.7%", "0.036", "1", "4/4", "host 1126->1175 MiB", verdict]
    lines = render(text_table("Cells that changed", headers, [row]))
    assert max(len(line) for line in lines) <= 80
    assert any(label in line for line in lines)  # on one line: grep finds it
    assert all(whole(lines, word) for word in verdict.split())
    assert "+8.3%" in "\n".join(lines)


# -- the run's outcome line -------------------------------------------------------------------------


def test_outcome_line_names_the_failed_cell_and_the_failed_and_inconclusive_checks():
    results = [cell(), cell(batch=4, status="failed")]
    numerics = [
        check(role="baseline", backend="torch", verdict="pass"),
        check(metric="miou", value=75.1, verdict="pass", ci=(-0.1, 0.3)),
        check(
            model="mask_rcnn",
            metric="segm_ap",
            value=60.24,
            baseline=60.88,
            tolerance=1.5,
            precision="fp16",
            verdict="fail",
            ci=(-1.127, -0.043),
        ),
        check(metric="mean_dice", value=74.88, verdict="inconclusive", ci=(-0.6, 0.3), images_needed=120),
        {**check(level="diagnosis", metric="fp16 diagnosis", value=None, baseline=None), "passed": None},
    ]
    text = outcome_line(results, numerics, "runs/x")
    head, *named = text.splitlines()
    assert head == "2 cells (1 failed), 3 numerics checks (1 failed, 1 inconclusive) -> runs/x"
    assert named == [
        "  failed cell   unet torch cpu fp32 256x256 b4: failed (RuntimeError: out of memory)",
        "  FAIL          mask_rcnn onnxruntime cpu fp16 segm_ap: -0.640 [-1.127, -0.043] "
        "vs band [-0.61, +1.50]",
        "  inconclusive  unet onnxruntime cpu fp32 mean_dice: -0.120 [-0.600, +0.300] "
        "vs band [-0.50, +0.50], on 32 images; ~120 images would decide",
    ]


def test_outcome_line_of_a_clean_check_run_and_of_many_failures():
    clean = outcome_line([], [check(verdict="pass"), check(metric="pq", verdict="pass")], "runs/c")
    assert clean == "2 numerics checks (0 failed, 0 inconclusive) -> runs/c"
    old = outcome_line([], [check(passed=False, value=70.0)], "runs/o")  # an old row: passed, no verdict
    assert "1 failed" in old and "FAIL          unet onnxruntime cpu fp32 miou: -5.000" in old
    many = outcome_line([cell(batch=b, status="failed") for b in range(1, 15)], [], "runs/m")
    lines = many.splitlines()
    assert len(lines) == 12 and lines[-1].startswith("  ... and 4 more")
