"""Parity reports say what their verdict was judged on, and the table prints exactly that."""

import pytest
from rich.console import Console

from segbench.export.artifacts import ExportRequest, cached_export
from segbench.export.onnx import OnnxExport, export_onnx
from segbench.export.parity import (
    PARITY_TOLERANCES,
    ParityCheck,
    ParityReport,
    check_parity,
    check_text,
    parity_failure,
)
from segbench.models import build_model
from segbench.reports.tables import parity_table

# These tests are about exporting and caching: each starts from an empty export cache.
pytestmark = pytest.mark.fresh_export_cache

UNET = {"base_channels": 4, "num_classes": 3}


def render(export: OnnxExport) -> list[str]:
    console = Console(record=True, width=120, color_system=None)
    console.print(parity_table(export))
    return [line.strip() for line in console.export_text().splitlines()]


def semantic_report(shape, rel_err: float, agreement: float) -> ParityReport:
    checks = (
        ParityCheck("max abs err (logits)", 0.0111, 0.227, "<=", True),
        ParityCheck("argmax agreement", agreement, 0.99, ">=", agreement >= 0.99, percent=True),
    )
    passed = all(c.passed for c in checks)
    return ParityReport(shape, 0.0111, rel_err, agreement, passed, checks=checks)


def test_checks_are_what_the_verdict_was_judged_on(tmp_path):
    model = build_model("unet", options=UNET)
    path = export_onnx(model, tmp_path / "unet.onnx", exporter="torchscript")
    tolerance = PARITY_TOLERANCES["fp16"]
    (report,) = check_parity(model, path, [(1, 40, 56)], tolerance=tolerance)
    abs_err, argmax = report.checks
    assert (abs_err.name, abs_err.direction) == ("max abs err (logits)", "<=")
    assert (argmax.name, argmax.direction, argmax.percent) == ("argmax agreement", ">=", True)
    # The error bound scales with PyTorch's output, so it is above atol for non-zero logits.
    assert tolerance.atol < abs_err.bound and abs_err.value == report.max_abs_err
    assert argmax.value == report.argmax_agreement and argmax.bound == tolerance.argmax_agreement
    assert report.passed and all(check.passed for check in report.checks)
    # The relative error is recorded but judges nothing: no check is named after it.
    assert not any("rel" in check.name for check in report.checks)


def test_cached_reports_keep_their_checks(tmp_path):
    model = build_model("unet", options=UNET)
    first = cached_export(model, "unet", ExportRequest(exporter="torchscript"), tmp_path)
    second = cached_export(model, "unet", ExportRequest(exporter="torchscript"), tmp_path)
    assert second.cached and first.parity[0].checks and second.parity == first.parity


def test_table_prints_judged_checks_with_bounds_and_keeps_rel_err_informational():
    reports = [semantic_report((1, 3, 69, 93), 7.22, 1.0), semantic_report((3, 3, 160, 64), 179.0, 0.99996)]
    lines = render(OnnxExport(path=None, opset=18, exporter="dynamo", export_s=0.0, parity=reports,
                              precision="fp16"))  # fmt: skip
    assert "pass" in lines[0]  # the overall verdict, in the title
    rows = [line for line in lines if "pass" in line or "FAIL" in line][1:]
    assert len(rows) == 4
    assert any("max abs err (logits)" in r and "0.0111" in r and "<=0.227" in r for r in rows)
    assert any("argmax agreement" in r and "100.000%" in r and ">=99%" in r for r in rows)
    # Floored, never rounded up: 99.996% of pixels agree, not "100.000%".
    assert any("argmax agreement" in r and "99.996%" in r for r in rows)
    # The relative errors appear only in the note that says they are not judged.
    assert not any("7.22" in r or "179" in r for r in rows)
    text = " ".join(lines)  # the caption wraps between words
    assert "Not judged: max elementwise relative error 7.22 at 1x3x69x93, 179 at 3x3x160x64" in text
    assert "max abs err bound: 0.01 + 0.02 x max|PyTorch output| at that input." in text


def test_failed_check_reads_as_failed():
    failing = semantic_report((1, 3, 64, 64), 0.5, 0.98)
    lines = render(OnnxExport(None, 18, "dynamo", 0.0, [failing], precision="fp16"))
    assert "FAIL" in lines[0]
    assert any("argmax agreement" in r and "98.000%" in r and ">=99%" in r and "FAIL" in r for r in lines)
    message = parity_failure([failing], "fp16")
    assert message == "fp16 ONNX parity failed at input 1x3x64x64: argmax agreement 98.000%, needs >=99%"


def test_a_graph_that_did_not_run_shows_why():
    broken = ParityReport((1, 3, 64, 64), float("inf"), float("inf"), None, False, error="onnxruntime: no")
    lines = render(OnnxExport(None, 18, "dynamo", 0.0, [broken]))
    assert any("onnxruntime: no" in line and "FAIL" in line for line in lines)
    assert not any(line.startswith("Not judged") for line in lines)  # inf errors compare nothing
    assert parity_failure([broken], "fp32") == "fp32 ONNX parity failed at input 1x3x64x64: onnxruntime: no"


def test_detection_reports_explain_the_match_and_keep_box_error_informational():
    check = ParityCheck("detections reproduced", 0.96, 0.95, ">=", True, percent=True)
    report = ParityReport((1, 3, 128, 128), 0.0123, 0.0, None, True, 0.96, (check,))
    lines = render(OnnxExport(None, 18, "torchscript", 0.0, [report], precision="fp16"))
    assert any("detections reproduced" in r and "96.000%" in r and ">=95%" in r for r in lines)
    text = " ".join(lines)
    assert "same label, score within 0.01, box IoU >= 0.95" in text
    assert "Not judged: largest box coordinate error (pixels) of reproduced detections 0.0123" in text
    assert "relative error" not in text  # a detector's relative error means nothing


@pytest.mark.parametrize(
    ("check", "value", "bound"),
    [
        # Three digits would print 0.0614 <= 0.0614 next to FAIL: more digits until it reads as judged.
        (ParityCheck("max abs err (x)", 0.06142, 0.0614, "<=", False), "0.06142", "<=0.0614"),
        (ParityCheck("max abs err (x)", 3.81e-06, 0.0109, "<=", True), "3.81e-06", "<=0.0109"),
        (ParityCheck("argmax agreement", 0.998996, 0.999, ">=", False, True), "99.899%", ">=99.9%"),
        (ParityCheck("argmax agreement", 0.9999996, 0.99, ">=", True, True), "99.999%", ">=99%"),
        (ParityCheck("argmax agreement", 1.0, 0.999, ">=", True, True), "100.000%", ">=99.9%"),
        (ParityCheck("max abs err (x)", float("nan"), 0.01, "<=", False), "nan", "<=0.01"),
    ],
)
def test_check_text_reads_as_judged(check, value, bound):
    assert check_text(check) == (value, bound)
