"""PNG figures of a run for the HTML report: latency and throughput sweeps, speed-up against PyTorch,
latency distributions (:mod:`segbench.reports.timing_figures`, from :mod:`segbench.reports.plot_data`),
achieved FLOP/s under the measured peak (:mod:`segbench.reports.roofline_figure`) and the numerics
verdict table (:mod:`segbench.reports.verdict_figure`).

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas and never through pyplot, so rendering
touches no global backend or figure registry (safe in tests, threads and a CLI alike) and nothing needs
closing. Every value in them is spelled by :mod:`segbench.reports.view`, as in the tables.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.style
import pandas as pd
from matplotlib.figure import Figure

from segbench.reports.figures import DPI, environment_caption
from segbench.reports.plot_data import (
    Series,
    cell_label,
    latency_series,
    size_order,
    speedups,
    throughput_series,
)
from segbench.reports.roofline_figure import TITLE as ROOFLINE_TITLE
from segbench.reports.roofline_figure import roofline_figure
from segbench.reports.timing_figures import TITLES as _TIMING_TITLES
from segbench.reports.timing_figures import (
    distribution_figure,
    latency_vs_batch_figure,
    speedup_figure,
    throughput_vs_size_figure,
)
from segbench.reports.verdict_figure import NUMERICS_TITLE, numerics_figure

# The figures' data and caption, importable from here as before the split.
__all__ = [
    "PLOT_NAMES",
    "TITLES",
    "Plot",
    "Series",
    "build_figures",
    "cell_label",
    "environment_caption",
    "latency_series",
    "render_plots",
    "size_order",
    "speedups",
    "throughput_series",
]

# Pinned for the duration of a render (and restored after): the figures look the same, byte for byte,
# whatever the caller's matplotlibrc or style says; unhinted text also draws about a fifth faster.
_STYLE: list[Any] = ["default", {"text.hinting": "no_hinting"}]
PLOT_NAMES = (
    "latency_vs_batch",
    "throughput_vs_size",
    "speedup_vs_torch",
    "latency_distribution",
    "roofline",
    "numerics_verdicts",
)
TITLES = {**_TIMING_TITLES, "roofline": ROOFLINE_TITLE, "numerics_verdicts": NUMERICS_TITLE}


@dataclass(frozen=True)
class Plot:
    """One rendered figure: ``png`` holds the file's bytes so a report can embed it without re-reading."""

    name: str
    title: str
    path: Path
    png: bytes


def build_figures(
    cells: pd.DataFrame, checks: pd.DataFrame, env: Mapping[str, Any]
) -> list[tuple[str, str, Figure]]:
    """``(name, title, figure)`` for every figure that has data, in :data:`PLOT_NAMES` order."""
    caption = environment_caption(env)
    with matplotlib.style.context(_STYLE):
        return _build_figures(cells, checks, env, caption)


def _build_figures(
    cells: pd.DataFrame, checks: pd.DataFrame, env: Mapping[str, Any], caption: str
) -> list[tuple[str, str, Figure]]:
    builders: dict[str, Callable[[], Figure | None]] = {
        "latency_vs_batch": lambda: latency_vs_batch_figure(cells, caption),
        "throughput_vs_size": lambda: throughput_vs_size_figure(cells, caption),
        "speedup_vs_torch": lambda: speedup_figure(cells, caption),
        "latency_distribution": lambda: distribution_figure(cells, caption),
        "roofline": lambda: roofline_figure(cells, env, caption),
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
