"""``segbench report DIR``: the files a run's results become.

From results.jsonl / numerics.jsonl: results.csv, results.parquet, numerics.csv, report.md, one
self-contained report.html and PNG plots under plots/. ``segbench run`` writes them when it finishes;
``segbench report`` re-renders them from the saved results at any time. Each file is written to a
temporary name and renamed into place, so an interrupted render never leaves a torn report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from segbench.files import atomic_write_text
from segbench.reports.plot_data import speedups
from segbench.reports.plots import render_plots
from segbench.reports.render import report_html, report_markdown
from segbench.reports.rundata import RunData

RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
NUMERICS_CSV = "numerics.csv"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
PLOTS_DIR = "plots"


def _replace(path: Path, write: Callable[[Path], object]) -> Path:
    """Let ``write`` (a pandas writer) fill a temporary file, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def csv_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose list column (``samples_ms``) is JSON text: CSV cells hold strings, not lists."""
    frame = frame.copy()
    if "samples_ms" in frame:
        frame["samples_ms"] = [json.dumps(list(samples)) for samples in frame["samples_ms"]]
    return frame


def parquet_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose mapping columns (model and backend options, the artifact's export info) are JSON
    text. Arrow infers a struct per column from whatever the rows hold, and a struct with no fields, such as
    an empty ``kept_fp32`` in an fp16 graph's export info, cannot be written to Parquet; rows whose keys
    differ would widen the struct with nulls. Text keeps every row as it was written."""
    frame = frame.copy()
    for column in frame.columns:
        if any(isinstance(value, dict) for value in frame[column]):
            frame[column] = [
                json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict) else value
                for value in frame[column]
            ]
    return frame


def speedup_by_row(run: RunData) -> dict[int, float]:
    """Each cell's speed-up over the PyTorch fp32 cell with the same model, device, size and batch."""
    table = speedups(run.cells)
    return {int(index): float(value) for index, value in table["speedup"].dropna().items()}


def write_report(run: RunData, out_dir: Path | None = None) -> list[Path]:
    """Write every report file for ``run`` into ``out_dir`` (default: the run directory); the paths."""
    out_dir = Path(out_dir or run.path)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells, checks = run.cells, run.checks
    written = [
        _replace(out_dir / RESULTS_CSV, lambda p: csv_ready(cells).to_csv(p, index=False)),
        _replace(out_dir / RESULTS_PARQUET, lambda p: parquet_ready(cells).to_parquet(p, index=False)),
        _replace(out_dir / NUMERICS_CSV, lambda p: checks.to_csv(p, index=False)),
    ]
    plots = render_plots(cells, checks, run.env, out_dir / PLOTS_DIR)
    written += [plot.path for plot in plots]
    speedup = speedup_by_row(run)
    markdown = report_markdown(run, plots, speedup)
    page = report_html(run, plots, speedup)
    for name, text in ((REPORT_MD, markdown), (REPORT_HTML, page)):
        atomic_write_text(out_dir / name, text)
        written.append(out_dir / name)
    return written
