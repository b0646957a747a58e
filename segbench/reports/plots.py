"""PNG figures of a run for the HTML report: latency and throughput sweeps, speed-up against PyTorch,
latency distributions and the numerics verdict table.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas and never through pyplot, so rendering
touches no global backend or figure registry (safe in tests, threads and a CLI alike) and nothing needs
closing. A cell that did not produce a measurement is always drawn as failed (a red x with its status),
never as a zero and never silently left out.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.style
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator
from matplotlib.transforms import blended_transform_factory

from segbench.env import gpu_names
from segbench.reports.figures import CAPTION_IN, DPI
from segbench.reports.figures import decorate as _decorate
from segbench.reports.figures import literal as _literal
from segbench.reports.figures import new_figure as _figure
from segbench.reports.figures import text_width_in as _text_width_in
from segbench.reports.verdict_figure import NUMERICS_TITLE, numerics_figure

# Pinned for the duration of a render (and restored after): the figures look the same, byte for byte,
# whatever the caller's matplotlibrc or style says; unhinted text also draws about a fifth faster.
_STYLE: list[Any] = ["default", {"text.hinting": "no_hinting"}]
FAILED_COLOR = "tab:red"
# Sample spread (slowest / fastest iteration over all cells) above which latency is shown on a log axis.
LOG_SPREAD = 20.0
PLOT_NAMES = (
    "latency_vs_batch",
    "throughput_vs_size",
    "speedup_vs_torch",
    "latency_distribution",
    "numerics_verdicts",
)
TITLES = {
    "latency_vs_batch": "p50 end-to-end latency vs batch size",
    "throughput_vs_size": "Throughput vs input size",
    "speedup_vs_torch": "Speed-up over PyTorch (baseline: PyTorch fp32, same device, size and batch)",
    "latency_distribution": "End-to-end latency of every timed iteration, per cell",
    "numerics_verdicts": NUMERICS_TITLE,
}
# boxplot's ``vert`` gave way to ``orientation`` in matplotlib 3.10 (and is deprecated there).
_HORIZONTAL: dict[str, Any] = (
    {"orientation": "horizontal"}
    if tuple(int(part) for part in matplotlib.__version__.split(".")[:2]) >= (3, 10)
    else {"vert": False}
)
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v")


@dataclass(frozen=True)
class Plot:
    """One rendered figure: ``png`` holds the file's bytes so a report can embed it without re-reading."""

    name: str
    title: str
    path: Path
    png: bytes


@dataclass(frozen=True)
class Series:
    """One line of a sweep figure: the measured points and, separately, the cells that failed.

    ``config`` is "backend_label device precision" (the line colour), ``variant`` the other fixed axis
    ("256x256" or "b4", the line style). ``failed`` holds ``(x, status)`` of cells without a measurement.
    """

    model: str
    config: str
    variant: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    failed: tuple[tuple[float, str], ...]

    @property
    def label(self) -> str:
        return f"{self.config}, {self.variant}"


# ---------------------------------------------------------------------------------------------- caption


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())


def environment_caption(env: Mapping[str, Any]) -> str:
    """One short line naming the machine and software: CPU (cores), GPUs, torch, onnxruntime, fingerprint.

    Keys missing from an older env.json show as "?" rather than failing, so any run can be plotted.
    """
    cpu = _one_line(env.get("cpu") or "unknown CPU")
    cores = env.get("cpu_cores_logical", env.get("cpu_count"))
    parts = [f"{cpu} ({cores} cores)" if cores else cpu]
    gpus = gpu_names(env)
    if gpus == []:
        parts.append("no GPU")
    elif gpus:
        counts = Counter(gpus)
        parts.append(", ".join(name if n == 1 else f"{n}× {name}" for name, n in counts.items()))
    packages = env.get("packages") or {}
    parts.append(f"torch {packages.get('torch') or '?'}")
    if packages.get("onnxruntime-gpu") and not packages.get("onnxruntime"):
        parts.append(f"onnxruntime-gpu {packages['onnxruntime-gpu']}")
    else:
        parts.append(f"onnxruntime {packages.get('onnxruntime') or '?'}")
    if env.get("tensorrt"):
        parts.append(f"TensorRT {env['tensorrt']}")
    parts.append(f"fingerprint {env.get('fingerprint') or '?'}")
    if env.get("git_sha"):
        parts.append(f"segbench {str(env['git_sha'])[:8]}")
    return _one_line(" · ".join(parts))


# ---------------------------------------------------------------------------------------------- data


def _measured(value: Any) -> bool:
    """A usable positive measurement: a None, NaN or non-positive value is never plotted as a point."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0


def _failure(row: Mapping[str, Any], column: str) -> str | None:
    """Why a cell has no point for ``column`` (its status), or None when it was measured."""
    if row["status"] != "ok":
        return str(row["status"])
    return None if _measured(row[column]) else "no measurement"


def _options_text(options: str) -> str:
    try:
        parsed = json.loads(options)
    except (TypeError, ValueError):
        return str(options)
    if not isinstance(parsed, dict):
        return str(options)
    return ", ".join(f"{k}={v}" for k, v in parsed.items())


def _with_model_labels(cells: pd.DataFrame) -> pd.DataFrame:
    """Add ``model_label``: the model name, plus its options only where one model ran with several
    option sets (every row repeating the same options would only crowd the labels)."""
    if "model_label" in cells.columns:
        return cells
    if cells.empty:
        return cells.assign(model_label=pd.Series(dtype=object))
    variants = cells.groupby("model", sort=False)["model_options"].nunique()
    labels = [
        f"{model} ({_options_text(options)})" if variants[model] > 1 and options != "{}" else model
        for model, options in zip(cells["model"], cells["model_options"], strict=True)
    ]
    return cells.assign(model_label=labels)


def _model_name(row: Mapping[str, Any]) -> str:
    return str(row.get("model_label") or row["model"])


def _config(row: Mapping[str, Any]) -> str:
    return f"{row['backend_label']} {row['device']} {row['precision']}"


def cell_label(row: Mapping[str, Any]) -> str:
    """How one cell is named in the figures: "model backend device precision size bN"."""
    return f"{_model_name(row)} {_config(row)} {row['size']} b{row['batch_size']}"


def _records(cells: pd.DataFrame) -> list[dict[str, Any]]:
    return _with_model_labels(cells).to_dict("records") if len(cells) else []


def size_order(cells: pd.DataFrame) -> list[str]:
    """The distinct input sizes ("HxW"), smallest pixel count first: the x positions of the size sweep."""
    sizes = {
        (int(h) * int(w), int(h), int(w), s)
        for h, w, s in zip(cells["height"], cells["width"], cells["size"], strict=True)
    }
    return [s for *_, s in sorted(sizes)]


def _sweep(
    cells: pd.DataFrame,
    variant_of: Callable[[Mapping[str, Any]], tuple[Hashable, str]],
    x_of: Callable[[Mapping[str, Any]], float],
    column: str,
) -> list[Series]:
    """Group cells into lines per (model, config, variant); models and configs in order of appearance,
    variants and points sorted, so the figure does not depend on the order cells were resumed in."""
    models: dict[str, None] = {}
    configs: dict[str, None] = {}
    groups: dict[tuple[str, str, Hashable, str], list[dict[str, Any]]] = {}
    for row in _records(cells):
        model, config = _model_name(row), _config(row)
        models.setdefault(model)
        configs.setdefault(config)
        sort_key, variant = variant_of(row)
        groups.setdefault((model, config, sort_key, variant), []).append(row)
    model_rank = {m: i for i, m in enumerate(models)}
    config_rank = {c: i for i, c in enumerate(configs)}
    series = []
    for model, config, sort_key, variant in sorted(
        groups, key=lambda k: (model_rank[k[0]], config_rank[k[1]], k[2])
    ):
        rows = sorted(groups[(model, config, sort_key, variant)], key=x_of)
        points = [(x_of(r), float(r[column])) for r in rows if _failure(r, column) is None]
        failed = [(x_of(r), reason) for r in rows if (reason := _failure(r, column)) is not None]
        series.append(
            Series(
                model=model,
                config=config,
                variant=variant,
                x=tuple(x for x, _ in points),
                y=tuple(y for _, y in points),
                failed=tuple(failed),
            )
        )
    return series


def latency_series(cells: pd.DataFrame) -> list[Series]:
    """Figure 1's lines: p50 latency (ms) against batch size, one per (model, config, input size)."""
    return _sweep(
        cells,
        variant_of=lambda r: ((int(r["height"]) * int(r["width"]), r["size"]), str(r["size"])),
        x_of=lambda r: float(r["batch_size"]),
        column="p50_ms",
    )


def throughput_series(cells: pd.DataFrame) -> list[Series]:
    """Figure 2's lines: throughput (images/s) against the input size's position in :func:`size_order`,
    one per (model, config, batch size)."""
    position = {size: float(i) for i, size in enumerate(size_order(cells))}
    return _sweep(
        cells,
        variant_of=lambda r: (int(r["batch_size"]), f"b{r['batch_size']}"),
        x_of=lambda r: position[r["size"]],
        column="throughput_ips",
    )


def _is_sweep(series: Sequence[Series]) -> bool:
    """Whether any line spans two or more x values (failed cells count: a sweep that broke is news)."""
    return any(len({*s.x, *(x for x, _ in s.failed)}) > 1 for s in series)


_PAIR_KEY = ["model", "model_options", "device", "height", "width", "batch_size"]


def speedups(cells: pd.DataFrame) -> pd.DataFrame:
    """Every cell that has a PyTorch fp32 partner (default options) with the same model, model options,
    device, size and batch, with ``speedup`` = partner p50 / this cell's p50 (>1: faster than PyTorch).

    The partner cells themselves are left out (always 1.0); the index is the cells' own. Where either side
    has no measurement ``speedup`` is NaN and ``reason`` says why, so the figure can show the cell as failed.
    """
    cells = _with_model_labels(cells)
    columns = [*cells.columns, "torch_p50_ms", "torch_status", "speedup", "reason", "label"]
    if cells.empty:
        return pd.DataFrame(columns=columns)
    is_torch = (
        (cells["backend"] == "torch") & (cells["precision"] == "fp32") & (cells["backend_options"] == "{}")
    )
    torch_cells = cells[is_torch].assign(_ok=cells["status"].eq("ok"))
    # A resumed run can hold a key twice: prefer the measured partner.
    torch_cells = torch_cells.sort_values("_ok", ascending=False, kind="stable").drop_duplicates(_PAIR_KEY)
    partners = torch_cells[[*_PAIR_KEY, "p50_ms", "status"]].rename(
        columns={"p50_ms": "torch_p50_ms", "status": "torch_status"}
    )
    others = cells[~is_torch].reset_index(names="_order")
    merged = others.merge(partners, on=_PAIR_KEY, how="inner").sort_values("_order", kind="stable")
    rows = []
    for row in merged.to_dict("records"):
        if (reason := _failure(row, "p50_ms")) is not None:
            row.update(speedup=math.nan, reason=f"failed: {reason}")
        elif row["torch_status"] != "ok" or not _measured(row["torch_p50_ms"]):
            baseline = row["torch_status"] if row["torch_status"] != "ok" else "no measurement"
            row.update(speedup=math.nan, reason=f"baseline failed: {baseline}")
        else:
            row.update(speedup=float(row["torch_p50_ms"]) / float(row["p50_ms"]), reason="")
        row["label"] = cell_label(row)
        rows.append(row)
    # Indexed like ``cells``, so a table of all cells can look its rows' speed-ups up.
    return pd.DataFrame(rows, columns=columns, index=[row["_order"] for row in rows])


# ---------------------------------------------------------------------------------------------- drawing
# Layouts are fixed in inches (margins sized from the measured label widths) rather than left to a layout
# engine: constrained layout draws every figure twice, doubling the render time for no visible gain.


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
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
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


def _latency_vs_batch(cells: pd.DataFrame, caption: str) -> Figure | None:
    series = latency_series(cells)
    if not _is_sweep(series):
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


def _throughput_vs_size(cells: pd.DataFrame, caption: str) -> Figure | None:
    series = throughput_series(cells)
    if not _is_sweep(series):
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


def _speedup_figure(cells: pd.DataFrame, caption: str) -> Figure | None:
    table = speedups(cells)
    if table.empty:
        return None
    # Group rows per model (models in order of appearance), a gap between groups.
    model_order = {m: i for i, m in enumerate(dict.fromkeys(_model_name(r) for r in _records(cells)))}
    table = table.assign(_group=[model_order[_model_name(r)] for r in _records(table)])
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
    values = [v for v in table["speedup"] if _measured(v)]
    low, high = min([*values, 1.0]), max([*values, 1.0])
    for row_y, speedup, reason in zip(ys, table["speedup"], table["reason"], strict=True):
        if _measured(speedup):
            # Bars grow from 1.0: right of the line is faster than PyTorch, left is slower.
            colour = "tab:blue" if speedup >= 1 else "tab:orange"
            ax.barh(row_y, speedup - 1.0, left=1.0, height=0.7, color=colour)
            ax.annotate(
                f"{speedup:.2f}×",
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
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(ys, labels=labels, fontsize=7)
    ax.set_ylim(max(ys) + 0.8, -0.8)
    ax.set_xlabel("speed-up over PyTorch fp32 (× = its p50 / this p50; >1 = faster)", fontsize=8)
    ax.set_ylabel("cell", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    _decorate(fig, TITLES["speedup_vs_torch"], caption, 0.65)
    return fig


def _distribution_figure(cells: pd.DataFrame, caption: str) -> Figure | None:
    rows = _records(cells)
    if not rows:
        return None
    labels, boxes, positions, failed = [], [], [], []
    for i, row in enumerate(rows):
        samples = [float(v) for v in row.get("samples_ms") or () if _measured(v)]
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


def build_figures(
    cells: pd.DataFrame, checks: pd.DataFrame, env: Mapping[str, Any]
) -> list[tuple[str, str, Figure]]:
    """``(name, title, figure)`` for every figure that has data, in :data:`PLOT_NAMES` order."""
    caption = environment_caption(env)
    with matplotlib.style.context(_STYLE):
        return _build_figures(cells, checks, caption)


def _build_figures(cells: pd.DataFrame, checks: pd.DataFrame, caption: str) -> list[tuple[str, str, Figure]]:
    builders: dict[str, Callable[[], Figure | None]] = {
        "latency_vs_batch": lambda: _latency_vs_batch(cells, caption),
        "throughput_vs_size": lambda: _throughput_vs_size(cells, caption),
        "speedup_vs_torch": lambda: _speedup_figure(cells, caption),
        "latency_distribution": lambda: _distribution_figure(cells, caption),
        "numerics_verdicts": lambda: numerics_figure(checks, caption),
    }
    built = [(name, TITLES[name], builders[name]()) for name in PLOT_NAMES]
    return [(name, title, fig) for name, title, fig in built if fig is not None]


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" entry: the bytes then depend only on the figure, not on the matplotlib build.
    # zlib level 3 instead of 6 saves a fifth of the render time for files about 5% larger.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None}, pil_kwargs={"compress_level": 3})
    return buffer.getvalue()


def render_plots(
    cells: pd.DataFrame, checks: pd.DataFrame, env: Mapping[str, Any], out_dir: Path
) -> list[Plot]:
    """Write ``<name>.png`` for every figure with data into ``out_dir`` (created if needed) and return
    them in :data:`PLOT_NAMES` order. A PNG of a figure skipped this time is removed, so a re-render into
    the same directory never leaves a stale figure from an earlier run beside the new ones."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    # Text is laid out when the figure is drawn, so saving needs the pinned style as much as building.
    with matplotlib.style.context(_STYLE):
        for name, title, fig in build_figures(cells, checks, env):
            png = _png(fig)
            path = out_dir / f"{name}.png"
            path.write_bytes(png)
            plots.append(Plot(name=name, title=title, path=path, png=png))
    drawn = {plot.name for plot in plots}
    for name in PLOT_NAMES:
        if name not in drawn:
            (out_dir / f"{name}.png").unlink(missing_ok=True)
    return plots
