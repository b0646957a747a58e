import math
from pathlib import Path

import pytest
from PIL import Image

from segbench.reports import plots, verdict_figure
from segbench.reports.rundata import cells_frame, checks_frame, load_run

RUN = Path(__file__).parents[2] / "reports" / "cpu-default"
ALL_PLOTS = [
    "latency_vs_batch",
    "throughput_vs_size",
    "speedup_vs_torch",
    "latency_distribution",
    "roofline",
    "numerics_verdicts",
]
ENV = {
    "cpu": "Intel Xeon Gold",
    "cpu_cores_logical": 16,
    "gpus": [{"name": "NVIDIA H100"}],
    "packages": {"torch": "2.5.1", "onnxruntime": "1.20.0"},
    "fingerprint": "0123456789ab",
    "git_sha": "b33fc116a70c8f7038fc108c42ef3d7fe1c357ea",
}


def cell(model, backend, batch, p50, *, status="ok", size=256, device="cpu", precision="fp32", options=None):
    ok = status == "ok"
    return {
        "model": model,
        "backend": backend,
        "backend_options": options or {},
        "device": device,
        "precision": precision,
        "height": size,
        "width": size,
        "batch_size": batch,
        "status": status,
        "latency_ms": {"p50": p50, "p90": p50 * 1.2, "mean": p50 * 1.05} if ok else None,
        "throughput_ips": batch * 1000.0 / p50 if ok else None,
        "samples_ms": [p50 * (1 + 0.02 * i) for i in range(10)] if ok else [],
        "error": None if ok else f"{status}: the worker gave up",
    }


def check(backend, metric, value, passed, *, role="candidate", level="task", precision="fp32", **extra):
    return {
        "model": "fcn",
        "backend": backend,
        "backend_options": {},
        "device": "cpu",
        "precision": precision,
        "role": role,
        "level": level,
        "metric": metric,
        "value": value,
        "passed": passed,
        **extra,
    }


@pytest.fixture
def cells():
    """A batch sweep and a size sweep for fcn, with one timeout, one crashed baseline and one cell
    (unet on cuda) that has no PyTorch partner."""
    return cells_frame(
        [
            cell("fcn", "torch", 1, 10.0),
            cell("fcn", "torch", 4, 30.0),
            cell("fcn", "onnxruntime", 1, 5.0),
            cell("fcn", "onnxruntime", 4, None, status="timeout"),
            cell("fcn", "torch", 1, 8.0, options={"channels_last": True}),
            cell("fcn", "torch", 1, None, status="crashed", size=512),
            cell("fcn", "onnxruntime", 1, 20.0, size=512),
            cell("unet", "onnxruntime", 1, 3.0, device="cuda", precision="fp16"),
        ]
    )


@pytest.fixture
def checks():
    return checks_frame(
        [
            check("torch", "miou", 50.0, True, role="baseline", baseline=50.0, delta=0.0, tolerance=0.0),
            check("onnxruntime", "miou", 48.0, False, baseline=50.0, delta=-2.0, tolerance=0.5),
            check(
                "onnxruntime",
                "tensors (max_rel_err:logits)",
                3e-7,
                True,
                level="tensor",
                tolerance=1e-3,
                bound="max",
            ),
            check("onnxruntime", "fp16 diagnosis", None, None, level="diagnosis", precision="fp16"),
            check("onnxruntime", "miou", None, None, precision="fp16", error="export failed"),
            # A row as written now: three-valued verdict, interval, band, images.
            check(
                "onnxruntime",
                "miou",
                39.9,
                None,
                precision="bf16",
                baseline=40.0,
                delta=-0.1,
                tolerance=0.5,
                verdict="inconclusive",
                ci_low=-0.6,
                ci_high=0.3,
                band_low=-0.4,
                band_high=0.5,
                images=64,
                images_needed=120,
            ),
        ]
    )


def _figure(cells, checks, name, env=ENV):
    figures = {n: fig for n, _, fig in plots.build_figures(cells, checks, env)}
    return figures[name]


def _failed_lines(fig):
    return [line for ax in fig.axes for line in ax.lines if line.get_gid() == "failed"]


@pytest.mark.slow
def test_real_run_writes_every_plot_as_png(tmp_path):
    run = load_run(RUN)
    out = tmp_path / "plots" / "nested"
    result = plots.render_plots(run.cells, run.checks, run.env, out)
    # A run from before achieved FLOP/s were recorded has no roofline.
    recorded = run.cells["achieved_tflops"].notna().any()
    assert [p.name for p in result] == [n for n in ALL_PLOTS if n != "roofline" or recorded]
    for plot in result:
        assert plot.path == out / f"{plot.name}.png"
        assert plot.png == plot.path.read_bytes()
        assert plot.title
        with Image.open(plot.path) as image:
            assert image.format == "PNG"
            assert image.width > 0 and image.height > 0


def test_rendering_is_deterministic(tmp_path, cells, checks):
    first = plots.render_plots(cells, checks, ENV, tmp_path / "a")
    second = plots.render_plots(cells, checks, ENV, tmp_path / "b")
    assert [p.png for p in first] == [p.png for p in second]


def test_the_callers_matplotlib_style_does_not_change_the_files(tmp_path, cells, checks):
    import matplotlib

    plain = plots.render_plots(cells, checks, ENV, tmp_path / "plain")
    with matplotlib.rc_context({"font.size": 20, "lines.linewidth": 5, "axes.facecolor": "black"}):
        styled = plots.render_plots(cells, checks, ENV, tmp_path / "styled")
        assert matplotlib.rcParams["font.size"] == 20  # and the caller's style is left as it was
    assert [p.png for p in plain] == [p.png for p in styled]


def test_a_figure_without_data_is_skipped(tmp_path, checks):
    # One batch size, two sizes: a size sweep but no batch sweep.
    cells = cells_frame([cell("fcn", "torch", 1, 10.0), cell("fcn", "torch", 1, 40.0, size=512)])
    names = [p.name for p in plots.render_plots(cells, checks_frame([]), ENV, tmp_path)]
    assert names == ["throughput_vs_size", "latency_distribution"]
    assert not (tmp_path / "latency_vs_batch.png").exists()


def test_a_stale_png_of_a_skipped_figure_is_removed(tmp_path, cells, checks):
    plots.render_plots(cells, checks, ENV, tmp_path)
    assert (tmp_path / "numerics_verdicts.png").exists()
    plots.render_plots(cells, checks_frame([]), ENV, tmp_path)
    assert not (tmp_path / "numerics_verdicts.png").exists()


def test_an_empty_run_renders_nothing(tmp_path):
    assert plots.render_plots(cells_frame([]), checks_frame([]), {}, tmp_path) == []


def test_failed_cell_is_a_failed_marker_in_the_latency_series(cells):
    series = {(s.model, s.config, s.variant): s for s in plots.latency_series(cells)}
    ort = series[("fcn", "onnxruntime cpu fp32", "256x256")]
    assert ort.x == (1.0,) and ort.y == (5.0,)
    assert ort.failed == ((4.0, "timeout"),)
    # The crashed torch cell is the only cell of its line: no point at all, just the failure.
    crashed = series[("fcn", "torch cpu fp32", "512x512")]
    assert crashed.x == () and crashed.failed == ((1.0, "crashed"),)
    for s in series.values():
        assert all(math.isfinite(y) and y > 0 for y in s.y)


def test_failed_cells_are_drawn_at_the_axis_bottom_not_as_points(cells, checks):
    fig = _figure(cells, checks, "latency_vs_batch")
    failed = _failed_lines(fig)
    assert sorted(float(line.get_xdata()[0]) for line in failed) == [1.0, 4.0]
    for line in failed:
        assert line.get_marker() == "x"
        # y is a fraction of the axes height, not a latency.
        y = float(line.get_ydata()[0])
        assert 0 < y < 0.5
        assert line.get_transform() != line.axes.transData
    fcn = next(ax for ax in fig.axes if ax.get_title() == "fcn")
    for line in fcn.lines:
        if line.get_gid() == "series":
            assert all(math.isfinite(y) and y > 0 for y in line.get_ydata())
            # The timed-out batch-4 cell is no point of its line.
            if line.get_label() == "onnxruntime cpu fp32, 256x256":
                assert list(line.get_xdata()) == [1.0]
    notes = [text.get_text() for text in fcn.texts]
    assert "onnxruntime cpu fp32, 256x256: timeout" in notes
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert {"failed (timeout)", "failed (crashed)"} <= set(legend)


def test_a_model_whose_cells_all_failed_gets_markers_but_no_value_scale(checks):
    cells = cells_frame(
        [
            cell("fcn", "torch", 1, None, status="crashed"),
            cell("fcn", "torch", 4, None, status="timeout"),
        ]
    )
    fig = _figure(cells, checks, "latency_vs_batch")
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    assert not [line for line in ax.lines if line.get_gid() == "series"]
    assert len(_failed_lines(fig)) == 2
    assert len(ax.get_yticks()) == 0
    assert "no cell measured" in [text.get_text() for text in ax.texts]


def test_throughput_series_orders_sizes_by_pixels(cells):
    assert plots.size_order(cells) == ["256x256", "512x512"]
    series = {(s.model, s.config, s.variant): s for s in plots.throughput_series(cells)}
    ort = series[("fcn", "onnxruntime cpu fp32", "b1")]
    assert ort.x == (0.0, 1.0)
    assert ort.y == pytest.approx((200.0, 50.0))
    assert series[("fcn", "onnxruntime cpu fp32", "b4")].failed == ((0.0, "timeout"),)


def test_speedup_is_torch_p50_over_the_cells_p50(cells):
    table = plots.speedups(cells)
    by_label = dict(zip(table["label"], table.to_dict("records"), strict=True))
    assert set(by_label) == {
        "fcn onnxruntime cpu fp32 256x256 b1",
        "fcn onnxruntime cpu fp32 256x256 b4",
        "fcn torch (channels_last=True) cpu fp32 256x256 b1",
        "fcn onnxruntime cpu fp32 512x512 b1",
    }
    assert by_label["fcn onnxruntime cpu fp32 256x256 b1"]["speedup"] == pytest.approx(10.0 / 5.0)
    assert by_label["fcn torch (channels_last=True) cpu fp32 256x256 b1"]["speedup"] == pytest.approx(
        10.0 / 8.0
    )
    timeout = by_label["fcn onnxruntime cpu fp32 256x256 b4"]
    assert math.isnan(timeout["speedup"]) and timeout["reason"] == "failed: timeout"
    orphan = by_label["fcn onnxruntime cpu fp32 512x512 b1"]
    assert math.isnan(orphan["speedup"]) and orphan["reason"] == "baseline failed: crashed"


def test_speedup_on_the_real_run_matches_the_torch_cells():
    cells = load_run(RUN).cells
    table = plots.speedups(cells)
    # Every onnxruntime cell has a torch fp32 partner on the cpu; the torch cells themselves are left out.
    assert len(table) == (cells["backend"] == "onnxruntime").sum() > 0
    torch = cells[(cells["backend"] == "torch") & (cells["precision"] == "fp32")]
    for row in table.to_dict("records"):
        partner = torch[
            (torch["model"] == row["model"])
            & (torch["size"] == row["size"])
            & (torch["batch_size"] == row["batch_size"])
        ]
        assert row["speedup"] == pytest.approx(partner["p50_ms"].item() / row["p50_ms"])


def test_speedup_figure_marks_cells_without_a_speedup_as_failed(cells, checks):
    fig = _figure(cells, checks, "speedup_vs_torch")
    assert "baseline: PyTorch fp32, same device, size and batch" in fig.get_suptitle()
    (ax,) = fig.axes
    assert len(ax.patches) == 2  # bars for the two measured speed-ups only
    assert len(_failed_lines(fig)) == 2
    notes = {text.get_text() for text in ax.texts}
    assert {"failed: timeout", "baseline failed: crashed", "2.00x", "1.25x"} <= notes
    assert any(line.get_xdata()[0] == 1.0 for line in ax.lines if line.get_gid() != "failed")


def test_distribution_lists_failed_cells_without_a_box(cells, checks):
    fig = _figure(cells, checks, "latency_distribution")
    (ax,) = fig.axes
    labels = [tick.get_text() for tick in ax.get_yticklabels()]
    assert len(labels) == len(cells)
    assert "fcn onnxruntime cpu fp32 256x256 b4 — failed: timeout" in labels
    assert "fcn torch cpu fp32 512x512 b1 — failed: crashed" in labels
    medians = [line for line in ax.lines if line.get_gid() is None and line.get_color() == "tab:blue"]
    assert len(medians) == 6  # one box per measured cell


def test_verdict_table_skips_diagnosis_and_names_each_verdict(checks):
    table = verdict_figure.verdict_table(checks)
    assert list(table.columns) == [
        "model",
        "backend",
        "device",
        "precision",
        "metric",
        "value",
        "baseline",
        "delta",
        "interval",
        "band",
        "verdict",
    ]
    assert "fp16 diagnosis" not in set(table["metric"])
    assert list(table["verdict"]) == [
        "baseline",
        "FAIL",
        "pass",
        "info (export failed)",
        "inconclusive (~120 images would decide)",
    ]
    tensor = table.iloc[2]
    assert tensor["value"] == "3.000e-07" and tensor["band"] == "<=0.00100"
    # An old row (no band of its own): the band rebuilt from the tolerance and the 99% floor.
    assert table.iloc[1]["band"] == "[-0.50, +0.50]"
    new = table.iloc[4]
    assert new["interval"] == "[-0.600, +0.300]" and new["band"] == "[-0.40, +0.50]"


def test_numerics_figure_colours_three_verdicts_apart(cells, checks):
    fig = _figure(cells, checks, "numerics_verdicts")
    (table,) = fig.axes[0].tables
    cells_by_pos = table.get_celld()
    verdict_column = len(verdict_figure.verdict_table(checks).columns) - 1
    colours = {
        cells_by_pos[row, verdict_column].get_text().get_text(): cells_by_pos[
            row, verdict_column
        ].get_facecolor()
        for row in range(1, 6)
    }
    red, green, grey = colours["FAIL"], colours["pass"], colours["baseline"]
    amber = colours["inconclusive (~120 images would decide)"]
    assert red[0] > red[1] and green[1] > green[0] and grey[0] == grey[1] == grey[2]
    assert amber[0] > amber[1] > amber[2]  # orange: neither the pass green nor the FAIL red
    assert len({red, green, grey, amber}) == 4
    assert colours["info (export failed)"] == grey
    assert "1 FAIL, 1 inconclusive" in fig.get_suptitle()


def test_every_figure_has_labelled_axes_and_the_caption(cells, checks):
    caption = plots.environment_caption(ENV)
    for name, title, fig in plots.build_figures(cells, checks, ENV):
        assert fig.get_suptitle().startswith(title), name
        assert caption in [text.get_text() for text in fig.texts], name
        for ax in fig.axes:
            if ax.get_visible() and ax.axison:
                assert ax.get_xlabel() and ax.get_ylabel(), name
    latency = _figure(cells, checks, "latency_vs_batch")
    assert latency.axes[0].get_ylabel() == "p50 latency (ms)"
    assert _figure(cells, checks, "throughput_vs_size").axes[0].get_ylabel() == "throughput (images/s)"


def test_environment_caption_names_machine_software_and_fingerprint():
    caption = plots.environment_caption(ENV)
    for part in ("Intel Xeon Gold (16 cores)", "NVIDIA H100", "torch 2.5.1", "onnxruntime 1.20.0"):
        assert part in caption
    assert "0123456789ab" in caption and "b33fc116" in caption
    assert "\n" not in caption


# The env.json of a run from before the fingerprint (an earlier reports/cpu-default): cpu_count instead of
# cpu_cores_logical, no gpus, no fingerprint.
OLD_ENV = {"python": "3.11.7", "cpu": "AMD EPYC", "cpu_count": 2, "torch_threads": 2,
           "cuda_available": False, "packages": {"torch": "2.14.1"}, "git_sha": "b33fc116a70c8f"}  # fmt: skip


def test_environment_caption_of_an_old_or_empty_env():
    caption = plots.environment_caption(OLD_ENV)
    assert "AMD EPYC (2 cores)" in caption and "no GPU" in caption and "fingerprint ?" in caption
    empty = plots.environment_caption({})
    assert isinstance(empty, str) and "fingerprint ?" in empty and "\n" not in empty


def test_several_gpus_of_one_model_are_counted():
    env = {"gpus": [{"name": "NVIDIA H100"}, {"name": "NVIDIA H100"}], "fingerprint": "f"}
    assert "2× NVIDIA H100" in plots.environment_caption(env)


def _with_rates(rows, gflops=2.0, peak=0.5):
    """Result rows with what a run writes now: the model's GFLOPs and, for ok cells, the achieved rate
    (GFLOPs x batch / p50) and its share of ``peak``."""
    for row in rows:
        row["gflops"] = gflops if row["status"] == "ok" else None
        if row["status"] == "ok":
            row["achieved_tflops"] = gflops * row["batch_size"] / row["latency_ms"]["p50"]
            row["peak_fraction"] = row["achieved_tflops"] / peak
    return rows


def test_roofline_places_measured_cells_under_each_measured_peak():
    rows = _with_rates([cell("fcn", "torch", 1, 10.0), cell("fcn", "torch", 4, 20.0),
                        cell("fcn", "onnxruntime", 4, None, status="timeout")])  # fmt: skip
    env = {**ENV, "peak_tflops": {"cpu": {"fp32": 0.5}, "cuda": {"fp16": 400.0, "fp32": 50.0}}}
    fig = _figure(cells_frame(rows), checks_frame([]), "roofline", env)
    (ax,) = fig.axes
    points = sorted((float(line.get_xdata()[0]), float(line.get_ydata()[0]))
                    for line in ax.lines if line.get_gid() == "cell")  # fmt: skip
    assert points == [(2.0, pytest.approx(0.2)), (2.0, pytest.approx(0.4))]
    peaks = sorted(float(line.get_ydata()[0]) for line in ax.lines if line.get_gid() == "peak")
    assert peaks == [0.5, 50.0, 400.0]
    texts = [text.get_text() for text in ax.texts]
    assert "cpu fp32 peak 0.500 TFLOP/s" in texts and "cuda fp16 peak 400.000 TFLOP/s" in texts
    # The timed-out cell: a red x at the model's GFLOPs (from its measured cells), with its status.
    (failed,) = _failed_lines(fig)
    assert float(failed.get_xdata()[0]) == 2.0
    assert any("timeout" in text for text in texts)


def test_roofline_of_a_cell_without_a_flop_count_says_so():
    rows = [*_with_rates([cell("fcn", "torch", 1, 10.0)]), cell("mask2former", "torch", 1, 900.0)]
    fig = _figure(cells_frame(rows), checks_frame([]), "roofline")
    texts = [text.get_text() for text in fig.axes[0].texts]
    assert "1 cell(s) without a FLOP count not shown" in texts
    assert "no peak measured in this run" in texts  # ENV has no peak_tflops


def test_a_run_before_the_rates_has_no_roofline(cells, checks):
    assert "roofline" not in [name for name, _, _ in plots.build_figures(cells, checks, ENV)]
