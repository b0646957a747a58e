"""The view model: one spelling per value, and every renderer showing the same strings."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from rich.text import Text

from segbench.reports import view
from segbench.reports.compare import compare_runs
from segbench.reports.render import check_change_rows, check_rows, result_rows
from segbench.reports.rundata import load_run
from segbench.reports.tables import numerics_table, results_table
from segbench.reports.verdict_figure import verdict_table
from segbench.results.verdicts import FAIL, INCONCLUSIVE, PASS
from tests.fakes.runs import cell, check, write_run

MISSING_VALUES = [None, math.nan, "", pd.NA]


def plain(markup: str) -> str:
    return Text.from_markup(markup).plain


# -- verdicts -------------------------------------------------------------------------------------------


def test_verdict_labels_and_tones():
    assert [view.verdict_label(v) for v in (PASS, FAIL, INCONCLUSIVE, None)] == [
        "pass",
        "FAIL",
        "inconclusive",
        "info",
    ]
    assert [view.tone(w) for w in ("pass", "FAIL", "inconclusive", "baseline", "info")] == [
        "ok",
        "fail",
        "inconclusive",
        "info",
        "info",
    ]
    assert view.verdict_word(check(role="baseline", backend="torch", verdict="pass")) == "baseline"
    assert view.verdict_word(check(passed=False)) == "FAIL"  # an old row: passed, no verdict
    assert view.verdict_word({**check(), "passed": None}) == "info"
    assert (
        view.with_note("inconclusive", "~120 images would decide")
        == "inconclusive (~120 images would decide)"
    )
    assert view.with_note("pass", "") == "pass"


def test_what_compare_says_is_spelled_like_a_verdict():
    assert view.change_label("regression", True) == "REGRESSION"
    assert view.change_label("now failing", True) == "NOW FAILING"
    assert view.change_label("within noise", False) == "within noise"
    assert view.change_tone("regression", regressed=True, improved=False) == "fail"
    assert view.change_tone("fixed", regressed=False, improved=True) == "ok"
    assert view.change_tone(INCONCLUSIVE, regressed=False, improved=False) == "inconclusive"
    assert view.change_tone("unchanged", regressed=False, improved=False) == "info"


# -- bounds, bands, intervals ---------------------------------------------------------------------------


def test_bounds_are_spelled_one_way():
    assert view.bound("max", view.statistic(0.001)) == "<=0.00100"
    assert view.bound("<=", view.statistic(0.001)) == "<=0.00100"
    assert view.bound("min", view.statistic(0.99)) == ">=0.99000"
    assert view.bound(">=", view.band_edge(-0.5)) == ">=-0.50"
    assert view.bound("max", view.MISSING) == "" and view.bound("max", "") == ""
    tensor = check(level="tensor", metric="tensors (max_rel_err:logits)", value=3e-7, baseline=None,
                   tolerance=1e-3)  # fmt: skip
    assert view.limit_text(tensor) == "<=0.00100"
    assert view.limit_text({**tensor, "bound": "min", "tolerance": 0.99}) == ">=0.99000"


def test_bands_and_intervals():
    assert view.band(-0.5, 0.5) == "[-0.50, +0.50]"
    assert view.band_edge(-0.563) == "-0.56"
    assert view.interval(-0.0171, 0.0049) == "[-0.017, +0.005]"
    assert view.interval(0.0, 0.0) == "[+0.000, +0.000]"
    # An old row: the band rebuilt from the tolerance and the 99% floor, max(-1.5, -0.01 x 60.9).
    old = check(metric="segm_ap", value=60.2, baseline=60.9, tolerance=1.5)
    assert view.limit_text(old) == "[-0.61, +1.50]"
    assert view.limit_text(check(role="baseline", backend="torch")) == ""


@pytest.mark.parametrize("value", MISSING_VALUES)
def test_missing_values(value):
    for format_ in (view.latency, view.throughput, view.memory, view.speedup, view.percent, view.p_value,
                    view.points, view.delta, view.statistic, view.band_edge):  # fmt: skip
        assert format_(value) == "-", format_
    assert view.interval(value, 0.1) == "" and view.interval(0.1, value) == ""
    assert view.band(value, 0.5) == ""
    assert view.count(value) == ""


# -- numbers --------------------------------------------------------------------------------------------


def test_number_formats():
    assert view.latency(44.1789) == "44.18"
    assert view.throughput(22.34) == "22.3"
    assert view.memory(980.6) == "981"
    assert view.speedup(3.8456) == "3.85x"
    assert view.percent(0.0442) == "+4.4%" and view.percent(-0.077) == "-7.7%"
    assert view.share(0.15) == "15%" and view.share(0.95) == "95%"
    assert view.p_value(0.0934) == "0.093" and view.p_value(1.2e-7) == "1.2e-07"
    assert view.points(80.8693) == "80.87"
    assert view.delta(-0.0114) == "-0.011" and view.delta(0.0) == "+0.000"
    assert view.delta(-0.8, signed=False) == "-0.800" and view.delta(0.8, signed=False) == "0.800"
    assert view.count(32.0) == "32"


def test_tensor_statistics_never_print_a_nonzero_value_as_zero():
    assert view.statistic(0.000614) == "0.00061"
    assert view.statistic(0.96576) == "0.96576" and view.statistic(1.0) == "1.00000"
    assert view.statistic(3.5779e-7) == "3.578e-07"
    assert view.statistic(0.0) == "0.00000"
    assert view.check_value(3.5779e-7, "tensor") == "3.578e-07"
    assert view.check_value(80.8693, "task") == "80.87"
    assert view.check_change(1e-7, "tensor") == "+1.000e-07" and view.check_change(0.1, "task") == "+0.100"


def test_image_counts_and_what_an_inconclusive_verdict_lacks():
    assert view.images(check(verdict="pass", images=32, changed=3)) == "32 (3 moved)"
    assert view.images(check(role="baseline", backend="torch", verdict="pass", images=32)) == "32"
    assert view.needed(120) == "~120 images would decide"
    assert view.needed(None) == "too few images to decide"
    inconclusive = check(verdict="inconclusive", ci=(-0.7, 0.3), images_needed=140)
    assert view.verdict_note(inconclusive) == "~140 images would decide"
    assert view.verdict_note(check(passed=False, error="RuntimeError: boom")) == "RuntimeError: boom"


def test_names():
    row = cell(options={"channels_last": True})
    assert view.backend_label(row) == "torch (channels_last=True)"
    assert view.backend_label({**row, "backend_options": '{"channels_last": true}'}) == (
        "torch (channels_last=True)"
    )
    assert view.cell_label(row) == "unet torch (channels_last=True) cpu fp32 256x256 b1"
    assert view.model_label("unet", '{"base_channels": 8}') == "unet (base_channels=8)"
    assert view.model_label("unet", "{}") == "unet"
    assert view.check_label(check()) == "unet onnxruntime cpu fp32 miou"


# -- the renderers agree ----------------------------------------------------------------------------------


def _numerics() -> list[dict]:
    tensor = check(level="tensor", metric="tensors (max_rel_err:logits)", value=3.5779e-7, baseline=None,
                   tolerance=1e-3, verdict="pass")  # fmt: skip
    return [
        check(role="baseline", backend="torch", verdict="pass"),
        check(metric="miou", value=75.1, verdict="pass", ci=(-0.1, 0.3), changed=4),
        check(metric="pixel_accuracy", value=92.0, baseline=93.0, verdict="fail", ci=(-1.4, -0.7)),
        check(metric="mean_dice", value=74.8, verdict="inconclusive", ci=(-0.7, 0.3), images_needed=140),
        tensor,
        check(metric="pq", value=None, passed=False, error="RuntimeError: export failed"),
    ]


def test_markdown_terminal_and_figure_show_the_same_numerics_strings(tmp_path):
    rows = _numerics()
    run = load_run(write_run(tmp_path / "run", [cell()], rows))
    markdown = [cells for cells, _ in check_rows(run)]
    terminal = [[plain(c) for c in cells] for cells, _ in numerics_table(rows).rows]
    figure = verdict_table(run.checks).to_dict("records")
    assert len(markdown) == len(terminal) == len(figure) == len(rows)
    for md, term, fig in zip(markdown, terminal, figure, strict=True):
        # Markdown: model backend device precision level metric value baseline delta interval band images
        # verdict; terminal: model backend device prec metric value baseline delta interval band images
        # verdict note.
        assert md[:4] == term[:4] and md[5:12] == term[4:11]
        assert md[12] == view.with_note(term[11], term[12])
        assert [fig[k] for k in ("value", "baseline", "delta", "interval", "band")] == md[6:11]
        assert fig["verdict"] == md[12]
    tensor = markdown[4]
    assert tensor[6] == "3.578e-07" and tensor[10] == "<=0.00100"
    assert markdown[1][11] == "32 (4 moved)" and markdown[3][12] == "inconclusive (~140 images would decide)"
    assert [row[12] for row in markdown[:3]] == ["baseline", "pass", "FAIL"]
    # The tones the HTML rows, the terminal and the figure colour by.
    assert [css for _, css in check_rows(run)] == ["info", "ok", "fail", "inconclusive", "ok", "fail"]


def test_markdown_and_terminal_show_the_same_cell_strings(tmp_path):
    measured = cell(samples=[20.0, 21.0, 20.5, 20.2], achieved_tflops=0.0523, peak_fraction=0.3816)
    results = [measured, cell(batch=4, status="failed")]
    run = load_run(write_run(tmp_path / "run", results))
    markdown = [cells for cells, _ in result_rows(run)]
    terminal = [[plain(c) for c in cells] for cells, _ in results_table(results).rows]
    for md, term in zip(markdown, terminal, strict=True):
        # Markdown: model backend device precision size batch p50 p90 p99 images/s vs TFLOP/s of-peak
        # MiB MiB status; terminal: model backend device prec size batch p50 p90 mean img/s of-peak
        # host-MiB status error.
        assert md[:8] == term[:8] and md[9] == term[9] and md[12:14] == term[10:12]
    ok, failed = markdown
    assert ok[6] == "20.35" and ok[9] == "49.0" and ok[13] == "900"
    assert ok[11:13] == ["0.052", "38.2%"]
    assert failed[6:13] == ["-"] * 7 and failed[15] == "failed: RuntimeError: out of memory"
    assert terminal[1][12:] == ["failed", "RuntimeError: out of memory"]


def test_compare_rows_spell_values_as_the_report_does(tmp_path):
    before = [check(metric="miou", value=75.4, baseline=75.0, verdict="pass", ci=(0.35, 0.45))]
    after = [check(metric="miou", value=74.6, baseline=75.0, verdict="pass", ci=(-0.45, -0.35))]
    comparison = compare_runs(
        load_run(write_run(tmp_path / "a", [cell()], before)),
        load_run(write_run(tmp_path / "b", [cell()], after)),
    )
    ((cells, css),) = check_change_rows(comparison.checks)
    assert cells[1:4] == ["75.40", "74.60", "-0.800"]
    assert cells[4].startswith("[-0.8") and cells[5] == ">=-0.50"
    assert cells[6] == "pass -> pass" and cells[7].startswith("REGRESSION: ") and css == "fail"
    assert "past -0.50" in cells[7]
