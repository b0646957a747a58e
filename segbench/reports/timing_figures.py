"""The report's timing figures: p50 latency against batch size, throughput against input size, the
speed-up over PyTorch and the latency distribution of every cell.

A cell that did not produce a measurement is always drawn as failed (a red x with its status), never as a
zero and never silently left out. Layouts are fixed in inches (margins sized from the measured label
widths) rather than left to a layout engine: constrained layout draws every figure twice, doubling the
render time for no visible gain.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator
from matplotlib.transforms import blended_transform_factory

from segbench.reports import view
from segbench.reports.figures import CAPTION_IN
from segbench.reports.figures import decorate as _decorate
from segbench.reports.figures import literal as _literal
from segbench.reports.figures import new_figure as _figure
from segbench.reports.figures import text_width_in as _text_width_in
from segbench.reports.plot_data import (
    Series,
    cell_label,
    is_sweep,
    latency_series,
    measured,
    model_name,
    records,
    size_order,
    speedups,
    throughput_series,
)

FAILED_COLOR = "tab:red"
# Sample spread (slowest / fastest iteration over all cells) above which latency is shown on a log axis.
LOG_SPREAD = 20.0
TITLES = {
    "latency_vs_batch": "p50 end-to-end latency vs batch size",
    "throughput_vs_size": "Throughput vs input size",
    "speedup_vs_torch": "Speed-up over PyTorch (baseline: PyTorch fp32, same device, size and batch)",
    "latency_distribution": "End-to-end latency of every timed iteration, per cell",
}
# boxplot's ``vert`` gave way to ``orientation`` in matplotlib 3.10 (and is deprecated there).
_HORIZONTAL: dict[str, Any] = (
    {"orientation": "horizontal"}
    if tuple(int(part) for part in matplotlib.__version__.split(".")[:2]) >= (3, 10)
    else {"vert": False}
)
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v")


def _failed_marker(
    ax: Axes, x: float, y: float, text: str, *, x_in_data: bool, text_left: bool = False
) -> None:
    """A red x at the low edge of the value axis (axes fraction, never a data value), with its label."""
    if x_in_data:
        transform = blended_transform_factory(ax.transData, ax.transAxes)
    else:
        transform = blended_transform_factory(ax.transAxes, ax.transData)
    ax.plot(
        [x],
        [y],
        transform=transform,
        marker="x",
        markersize=8,
        markeredgewidth=2,
        color=FAILED_COLOR,
        linestyle="none",
        clip_on=False,
        gid="failed",
        label="_failed",
    )
    ax.annotate(
        _literal(text),
        xy=(x, y),
        xycoords=transform,
        xytext=(-6 if text_left else 6, 0),
        textcoords="offset points",
        ha="right" if text_left else "left",
        fontsize=6,
        color=FAILED_COLOR,
        va="center",
        annotation_clip=False,
    )


def _plain_log_axis(axis: Any) -> None:
    # Log axes with 1-2-5 ticks printed as plain numbers: readable, and a failed cell's marker at the
    # bottom cannot be mistaken for a zero because a log axis has none.
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: view.axis_number(v)))
    # Unlabelled minor ticks add nothing the 1-2-5 grid does not show, and cost a third of the draw.
    axis.set_minor_locator(NullLocator())


def _sweep_figure(
    series: Sequence[Series],
    title: str,
    caption: str,
    *,
    xlabel: str,
    ylabel: str,
    xticks: Sequence[tuple[float, str]],
    log2_x: bool,
) -> Figure:
    models = list(dict.fromkeys(s.model for s in series))
    configs = list(dict.fromkeys(s.config for s in series))
    variants = list(dict.fromkeys(s.variant for s in series))
    statuses = list(dict.fromkeys(status for s in series for _, status in s.failed))
    legend_labels = [s.label for s in series if s.x] + [f"failed ({status})" for status in statuses]
    ncols = min(3, len(models))
    nrows = math.ceil(len(models) / ncols)
    panel_w, panel_h, hgap, vgap = 3.6, 2.6, 0.8, 0.85
    left, top, bottom = 0.8, 0.8, CAPTION_IN + 0.55
    grid_right = left + ncols * panel_w + (ncols - 1) * hgap
    width = grid_right + 0.3 + _text_width_in(legend_labels, 7) + 0.7
    height = top + nrows * panel_h + (nrows - 1) * vgap + bottom
    fig = _figure(width, height)
    axes = fig.subplots(
        nrows,
        ncols,
        squeeze=False,
        gridspec_kw={
            "left": left / width,
            "right": grid_right / width,
            "bottom": bottom / height,
            "top": 1 - top / height,
            "wspace": hgap / panel_w,
            "hspace": vgap / panel_h,
        },
    ).ravel()
    tick_xs = [x for x, _ in xticks]

    def position(x: float) -> float:
        return math.log2(x) if log2_x else x

    middle = (position(min(tick_xs)) + position(max(tick_xs))) / 2 if tick_xs else 0.0
    handles: dict[str, Any] = {}
    for ax, model in zip(axes, models, strict=False):
        ax.set_yscale("log")
        if log2_x:
            ax.set_xscale("log", base=2)
        failed_at: Counter[float] = Counter()
        for s in (s for s in series if s.model == model):
            colour = f"C{configs.index(s.config) % 10}"
            v = variants.index(s.variant)
            if s.x:
                (line,) = ax.plot(
                    s.x,
                    s.y,
                    color=colour,
                    linestyle=_LINESTYLES[v % len(_LINESTYLES)],
                    marker=_MARKERS[v % len(_MARKERS)],
                    markersize=4,
                    label=_literal(s.label),
                    gid="series",
                )
                handles.setdefault(s.label, line)
            for x, status in s.failed:
                # Stack several failures at one x so their labels stay apart.
                y = 0.04 + 0.08 * failed_at[x]
                failed_at[x] += 1
                # Label towards the middle so it stays inside this panel.
                text_left = position(x) > middle
                _failed_marker(ax, x, y, f"{s.label}: {status}", x_in_data=True, text_left=text_left)
        measured = any(line.get_gid() == "series" for line in ax.lines)
        if failed_at and measured:
            # Lower the axis so the failed markers get a strip of their own, below every measured point.
            strip = 0.08 * max(failed_at.values())
            low, high = (math.log10(v) for v in ax.get_ylim())
            ax.set_ylim(10 ** ((low - strip * high) / (1 - strip)), 10**high)
        ax.set_title(_literal(model), fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if measured:
            _plain_log_axis(ax.yaxis)
        else:
            # Every cell of this model failed: a value scale would only invite reading the markers on it.
            ax.yaxis.set_major_locator(NullLocator())
            ax.yaxis.set_minor_locator(NullLocator())
            ax.text(0.5, 0.5, "no cell measured", transform=ax.transAxes, ha="center", color="0.4")
        ax.set_xticks(tick_xs, labels=[label for _, label in xticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(models) :]:
        ax.set_visible(False)
    for status in statuses:
        handles[f"failed ({status})"] = Line2D(
            [], [], marker="x", markeredgewidth=2, color=FAILED_COLOR, linestyle="none"
        )
    if handles:
        fig.legend(
            list(handles.values()),
            [_literal(label) for label in handles],
            loc="upper left",
            bbox_to_anchor=((grid_right + 0.3) / width, 1 - top / height),
            fontsize=7,
            frameon=False,
        )
    _decorate(fig, title, caption, top)
    return fig


def latency_vs_batch_figure(cells: pd.DataFrame, caption: str) -> Figure | None:
    series = latency_series(cells)
    if not is_sweep(series):
        return None
    batches = sorted({int(b) for b in cells["batch_size"]})
    return _sweep_figure(
        series,
        TITLES["latency_vs_batch"],
        caption,
        xlabel="batch size (images)",
        ylabel="p50 latency (ms)",
        xticks=[(float(b), str(b)) for b in batches],
        log2_x=True,
    )


def throughput_vs_size_figure(cells: pd.DataFrame, caption: str) -> Figure | None:
    series = throughput_series(cells)
    if not is_sweep(series):
        return None
    return _sweep_figure(
        series,
        TITLES["throughput_vs_size"],
        caption,
        xlabel="input size (height x width, pixels)",
        ylabel="throughput (images/s)",
        xticks=[(float(i), size) for i, size in enumerate(size_order(cells))],
        log2_x=False,
    )


def _rows_figure(labels: Sequence[str], gaps: int) -> tuple[Figure, Axes]:
    """A figure with one horizontal row per label: the left margin fits the longest label."""
    left = _text_width_in(labels, 7) + 0.6
    plot_w, right, top, bottom = 7.0, 0.6, 0.65, CAPTION_IN + 0.55
    plot_h = 0.24 * (len(labels) + 0.6 * gaps) + 0.3
    width, height = left + plot_w + right, top + plot_h + bottom
    fig = _figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, plot_w / width, plot_h / height))
    return fig, ax


def speedup_figure(cells: pd.DataFrame, caption: str) -> Figure | None:
    table = speedups(cells)
    if table.empty:
        return None
    # Group rows per model (models in order of appearance), a gap between groups.
    model_order = {m: i for i, m in enumerate(dict.fromkeys(model_name(r) for r in records(cells)))}
    table = table.assign(_group=[model_order[model_name(r)] for r in records(table)])
    table = table.sort_values("_group", kind="stable")
    ys, y, previous = [], 0.0, None
    for group in table["_group"]:
        if previous is not None and group != previous:
            y += 0.6
        ys.append(y)
        y += 1.0
        previous = group
    labels = [_literal(label) for label in table["label"]]
    fig, ax = _rows_figure(labels, gaps=table["_group"].nunique() - 1)
    values = [v for v in table["speedup"] if measured(v)]
    low, high = min([*values, 1.0]), max([*values, 1.0])
    for row_y, speedup, reason in zip(ys, table["speedup"], table["reason"], strict=True):
        if measured(speedup):
            # Bars grow from 1.0: right of the line is faster than PyTorch, left is slower.
            colour = "tab:blue" if speedup >= 1 else "tab:orange"
            ax.barh(row_y, speedup - 1.0, left=1.0, height=0.7, color=colour)
            ax.annotate(
                view.speedup(speedup),
                xy=(speedup, row_y),
                xytext=(3 if speedup >= 1 else -3, 0),
                textcoords="offset points",
                ha="left" if speedup >= 1 else "right",
                va="center",
                fontsize=6,
            )
        else:
            _failed_marker(ax, 0.01, row_y, reason, x_in_data=False)
    ax.axvline(1.0, color="0.2", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xlim(low / 1.6, high * 1.6)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: view.axis_number(v) + view.SPEEDUP_SIGN))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(ys, labels=labels, fontsize=7)
    ax.set_ylim(max(ys) + 0.8, -0.8)
    sign = view.SPEEDUP_SIGN
    ax.set_xlabel(f"speed-up over PyTorch fp32 ({sign} = its p50 / this p50; >1 = faster)", fontsize=8)
    ax.set_ylabel("cell", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    _decorate(fig, TITLES["speedup_vs_torch"], caption, 0.65)
    return fig


def distribution_figure(cells: pd.DataFrame, caption: str) -> Figure | None:
    rows = records(cells)
    if not rows:
        return None
    labels, boxes, positions, failed = [], [], [], []
    for i, row in enumerate(rows):
        samples = [float(v) for v in row.get("samples_ms") or () if measured(v)]
        label = cell_label(row)
        if row["status"] != "ok":
            label += f" — failed: {row['status']}"
            failed.append((i, str(row["status"])))
        elif samples:
            boxes.append(samples)
            positions.append(i)
        else:
            label += " — no samples"
            failed.append((i, "no samples"))
        labels.append(_literal(label))
    fig, ax = _rows_figure(labels, gaps=0)
    if boxes:
        ax.boxplot(
            boxes,
            positions=positions,
            **_HORIZONTAL,
            widths=0.6,
            flierprops={"markersize": 2, "markeredgecolor": "0.4"},
            medianprops={"color": "tab:blue"},
            manage_ticks=False,
        )
        everything = [v for b in boxes for v in b]
        if max(everything) / min(everything) > LOG_SPREAD:
            ax.set_xscale("log")
            _plain_log_axis(ax.xaxis)
    for i, status in failed:
        _failed_marker(ax, 0.01, i, status, x_in_data=False)
    ax.set_yticks(range(len(rows)), labels=labels, fontsize=7)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        if row["status"] != "ok":
            tick.set_color(FAILED_COLOR)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("end-to-end latency per iteration (ms)", fontsize=8)
    ax.set_ylabel("cell", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    _decorate(fig, TITLES["latency_distribution"], caption, 0.65)
    return fig
