"""The roofline-style figure: each cell's achieved TFLOP/s against its model's GFLOPs per image, under
the matmul peak the run measured for each device and precision (a horizontal line each).

A point near its line is a backend that keeps the hardware busy; one far below spends its time elsewhere
(memory traffic, small kernels, pre- and postprocessing on the host). A cell without a measurement is a
red x at the bottom with its status, at its model's GFLOPs where any cell of that model and size has them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from segbench.reports import view
from segbench.reports.figures import CAPTION_IN, decorate, literal, new_figure, text_width_in
from segbench.reports.plot_data import RooflinePoint, peak_lines, roofline_points
from segbench.reports.timing_figures import FAILED_COLOR, _failed_marker, _plain_log_axis

TITLE = "Achieved TFLOP/s vs GFLOPs per image, under the measured peak (roofline)"
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_PEAK_STYLES = ("--", "-.", ":", (0, (5, 1)))


def _limits(values: Sequence[float]) -> tuple[float, float]:
    # Half a decade of room either side, so the points and the peak labels stay off the frame.
    return min(values) / 3, max(values) * 3


def _legend_handles(points: Sequence[RooflinePoint], configs: list[str], models: list[str]) -> dict:
    handles: dict[str, Any] = {}
    for i, config in enumerate(configs):
        handles[config] = Line2D([], [], color=f"C{i % 10}", marker="o", linestyle="none", markersize=5)
    for i, model in enumerate(models):
        marker = _MARKERS[i % len(_MARKERS)]
        handles[model] = Line2D([], [], color="0.3", marker=marker, linestyle="none", markersize=5)
    for status in dict.fromkeys(p.status for p in points if p.y is None and p.x is not None):
        handles[f"failed ({status})"] = Line2D(
            [], [], marker="x", markeredgewidth=2, color=FAILED_COLOR, linestyle="none"
        )
    return handles


def roofline_figure(cells: pd.DataFrame, env: Mapping[str, Any], caption: str) -> Figure | None:
    """The figure, or None for a run without achieved FLOP/s (one written before they were recorded)."""
    points = roofline_points(cells)
    placed = [(p, p.x, p.y) for p in points if p.x is not None and p.y is not None]
    if not placed:
        return None
    peaks = peak_lines(env)
    configs = list(dict.fromkeys(p.config for p in points))
    models = list(dict.fromkeys(p.model for p in points))
    handles = _legend_handles(points, configs, models)
    legend_w = text_width_in(list(handles), 7) + 0.6
    left, plot_w, plot_h, top, bottom = 0.9, 7.0, 4.6, 0.65, CAPTION_IN + 0.6
    width, height = left + plot_w + 0.3 + legend_w, top + plot_h + bottom
    fig = new_figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, plot_w / width, plot_h / height))
    ax.set_xscale("log")
    ax.set_yscale("log")
    xs = [p.x for p in points if p.x is not None]
    ax.set_xlim(*_limits(xs))
    ax.set_ylim(*_limits([*(y for _, _, y in placed), *(value for _, value in peaks)]))
    for p, x, y in placed:
        ax.plot(
            [x],
            [y],
            color=f"C{configs.index(p.config) % 10}",
            marker=_MARKERS[models.index(p.model) % len(_MARKERS)],
            markersize=5,
            linestyle="none",
            alpha=0.85,
            gid="cell",
        )
        ax.annotate(f"b{p.batch}", xy=(x, y), xytext=(4, 2), textcoords="offset points", fontsize=5,
                    color="0.35")  # fmt: skip
    for i, (name, value) in enumerate(peaks):
        style = _PEAK_STYLES[i % len(_PEAK_STYLES)]
        ax.axhline(value, color="0.25", linewidth=1, linestyle=style, gid="peak")
        ax.annotate(literal(f"{name} peak {view.tflops(value)} TFLOP/s"), xy=(1.0, value),
                    xycoords=("axes fraction", "data"), xytext=(-4, 3), textcoords="offset points",
                    ha="right", va="bottom", fontsize=7, color="0.25")  # fmt: skip
    for p in points:
        if p.y is None and p.x is not None:
            _failed_marker(ax, p.x, 0.03, f"{p.model} {p.config} b{p.batch}: {p.status}", x_in_data=True)
    unplaced = sum(p.x is None for p in points)
    if unplaced:
        ax.text(0.01, 0.99, f"{unplaced} cell(s) without a FLOP count not shown", transform=ax.transAxes,
                ha="left", va="top", fontsize=7, color=FAILED_COLOR)  # fmt: skip
    if not peaks:
        ax.text(0.5, 0.99, "no peak measured in this run", transform=ax.transAxes, ha="center", va="top",
                fontsize=7, color="0.4")  # fmt: skip
    _plain_log_axis(ax.xaxis)
    _plain_log_axis(ax.yaxis)
    ax.set_xlabel("model GFLOPs per image (one forward at the cell's input size)", fontsize=8)
    ax.set_ylabel("achieved TFLOP/s (FLOPs x batch / compute p50)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="major", alpha=0.3)
    fig.legend(
        list(handles.values()),
        [literal(label) for label in handles],
        loc="upper left",
        bbox_to_anchor=((left + plot_w + 0.3) / width, 1 - top / height),
        fontsize=7,
        frameon=False,
    )
    decorate(fig, TITLE, caption, top)
    return fig
