"""Drawing plumbing shared by the report's figures (:mod:`segbench.reports.timing_figures` and
:mod:`segbench.reports.verdict_figure`): the canvas, text measuring, title and the environment caption.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas and never through pyplot, so rendering
touches no global backend or figure registry. Layouts are fixed in inches (margins sized from the measured
label widths) rather than left to a layout engine: constrained layout draws every figure twice, doubling
the render time for no visible gain.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

from segbench.env import gpu_names

DPI = 100
# Inches between a table cell's border and its text (matplotlib pads by a fraction of the cell's width,
# which crowds narrow columns and indents wide ones).
CELL_PAD_IN = 0.05
# Inches kept free at the bottom of every figure for the environment caption.
CAPTION_IN = 0.3


def literal(text: str) -> str:
    # A pair of "$" in an error message or option would otherwise be parsed as mathtext.
    return text.replace("$", r"\$")


def text_width_in(texts: Sequence[str], size: float) -> float:
    """The width in inches of the widest of ``texts`` at ``size`` points, as Agg will draw it."""
    longest = max((len(t) for t in texts), default=0)
    # Measuring is not free (a table has hundreds of cells): only strings near the longest can be widest.
    candidates = {t for t in texts if len(t) >= 0.7 * longest}
    renderer = RendererAgg(1, 1, DPI)
    font = FontProperties(size=size)
    widths = [renderer.get_text_width_height_descent(t, font, ismath=False)[0] for t in sorted(candidates)]
    return max(widths, default=0.0) / DPI


def new_figure(width_in: float, height_in: float) -> Figure:
    """A pyplot-free figure on an Agg canvas: no global state, garbage-collected like any object."""
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def decorate(fig: Figure, title: str, caption: str, top_in: float) -> None:
    """Title centred in the top margin, environment caption in the strip kept free at the bottom."""
    height_in = fig.get_figheight()
    fig.suptitle(title, fontsize=11, y=1 - top_in / 2 / height_in, va="center")
    fig.text(0.005, 0.08 / height_in, literal(caption), fontsize=7, color="0.35", ha="left", va="bottom")


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
