"""The results pages, generated from the runs committed under ``reports/``: every table comes from the
run's own files through segbench's report code (``segbench.reports``), or from the committed comparison
JSON through pandas, never from text typed into the page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from segbench.cli.docgen.markdown import MISSING, code, page, table
from segbench.env import environment_rows
from segbench.reports import view
from segbench.reports.render import (
    CHECK_HEADERS,
    LATENCY_NOTE,
    RESULT_HEADERS,
    check_rows,
    checks_note,
    peak_text,
    result_rows,
    run_summary,
)
from segbench.reports.report import speedup_by_row
from segbench.reports.rundata import RunData, load_run
from segbench.results.layout import RESULTS_FILE

# GPU runs are committed as reports/gpu-<card>/ (see ../shared/gpu-smoke/README.md's step 4).
GPU_FOLDER = re.compile(r"gpu-")


def run_dirs(reports: Path) -> list[Path]:
    """Every committed run directory (one holding ``results.jsonl``), in path order."""
    return sorted(path.parent for path in reports.rglob(RESULTS_FILE))


def slug(reports: Path, run_dir: Path) -> str:
    """The page name of a run: its path under ``reports/`` with ``/`` as ``-``."""
    return "-".join(run_dir.relative_to(reports).parts)


def assets(reports: Path) -> dict[str, Path]:
    """Site path -> file for each run's plots and HTML report: the docs build serves them from
    ``reports/`` (``docs/hooks.py``) rather than from committed copies."""
    found: dict[str, Path] = {}
    for run_dir in run_dirs(reports):
        name = slug(reports, run_dir)
        files = [*sorted((run_dir / "plots").glob("*.png")), run_dir / "report.html"]
        for path in files:
            if path.is_file():
                found[f"results/{name}/{path.relative_to(run_dir).as_posix()}"] = path
    return found


def _readme(folder: Path) -> tuple[str | None, str]:
    """A folder's README: its first heading and the rest (headings one level down, below the page's)."""
    path = folder / "README.md"
    if not path.is_file():
        return None, ""
    lines = path.read_text(encoding="utf-8").splitlines()
    title = lines[0].removeprefix("# ").strip() if lines and lines[0].startswith("# ") else None
    body = lines[1:] if title else lines
    return title, "\n".join("#" + line if line.startswith("#") else line for line in body).strip()


def _devices(env: dict[str, Any]) -> str:
    gpus = [str(gpu.get("name")) for gpu in env.get("gpus") or [] if isinstance(gpu, dict)]
    return ", ".join(gpus) if gpus else f"CPU: {env.get('cpu', MISSING)}"


def _when(run: RunData) -> str:
    stamps = sorted(str(t) for t in run.cells["timestamp"].dropna())
    return f"{stamps[0]} .. {stamps[-1]}" if stamps else MISSING


def run_page(reports: Path, run_dir: Path) -> str:
    run = load_run(run_dir)
    name = slug(reports, run_dir)
    title, readme = _readme(run_dir)
    folder = run_dir.relative_to(reports.parent).as_posix()
    facts = [
        ("folder", code(folder + "/")),
        ("config", f"{run.env.get('config_name', MISSING)} (hash {run.env.get('config_hash', MISSING)})"),
        ("measured", _when(run)),
        ("device", _devices(run.env)),
        ("measured peak (matmul, TFLOP/s)", peak_text(run.env)),
    ]
    parts = [f"**{run_summary(run)}**", table(["about the run", ""], facts)]
    if readme:
        parts += ["## About this run", f"From {code(folder + '/README.md')}:", readme]
    parts += [
        "## Latency and throughput",
        LATENCY_NOTE,
        table(RESULT_HEADERS, [cells for cells, _ in result_rows(run, speedup_by_row(run))]),
    ]
    if len(run.checks):
        parts += [
            "## Numerics against the PyTorch fp32 baseline",
            checks_note(run),
            table(CHECK_HEADERS, [cells for cells, _ in check_rows(run)]),
        ]
    for path in sorted(run_dir.glob("compare*.json")):
        parts += [f"## Comparison: {code(path.name)}", *_comparison(path)]
    plots = sorted((run_dir / "plots").glob("*.png"))
    if plots:
        parts.append("## Plots")
        parts += [f"![{plot.stem.replace('_', ' ')}]({name}/plots/{plot.name})" for plot in plots]
    if (run_dir / "report.html").is_file():
        parts.append(f"The run's own self-contained HTML report: [report.html]({name}/report.html).")
    parts += ["## Machine and software", table(["field", "value"], environment_rows(run.env))]
    return page(title or f"Run {folder}", f"the committed run in `{folder}/`", parts)


def _change_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    """One row per compared cell, from a comparison JSON (``segbench compare`` or ``segbench ab``)."""
    frame = pd.json_normalize(cells)
    rows = []
    for _, cell in frame.iterrows():
        before = cell.get("baseline_p50_ms", cell.get("base_p50_ms"))
        after = cell.get("current_p50_ms", cell.get("head_p50_ms"))
        change = cell.get("p50_change", cell.get("change"))
        interval = cell.get("interval")
        spread = (
            f"[{view.percent(interval[0])}, {view.percent(interval[1])}]"
            if isinstance(interval, list) and len(interval) == 2
            else MISSING
        )
        rows.append([cell["label"], view.latency(before), view.latency(after), view.percent(change), spread,
                     str(cell["verdict"]), str(cell.get("note") or "")])  # fmt: skip
    return rows


CHANGE_HEADERS = ["cell", "before p50 ms", "after p50 ms", "change", "interval", "verdict", "note"]


def _comparison(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    settings = data.get("settings", {})
    summary = ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in data.get("summary", {}).items())
    sides = data.get("sides") or {}
    # An A/B judges the paired ratios of the passes' fastest iterations; compare judges the p50s.
    change = (
        "change: the geometric mean of the pass pairs' ratios of their fastest iterations, with its 95% "
        "interval (the p50s are shown beside)"
        if data.get("passes")
        else "change: of the p50"
    )
    lines = [
        f"Settings: threshold {view.share(settings.get('threshold', 0))}, alpha {settings.get('alpha')}"
        + (f", {data['passes']} pass pairs" if data.get("passes") else "")
        + f"; {change}. Summary: {summary}.",
    ]
    if sides:
        lines.append(table(["side", "what ran"], sorted(sides.items())))
    lines.append(table(CHANGE_HEADERS, _change_rows(data.get("cells", []))))
    return lines


def ab_page(reports: Path) -> str:
    folder = reports / "ab"
    title, readme = _readme(folder)
    parts = [readme] if readme else []
    for path in sorted(folder.glob("*/comparison.json")):
        parts += [f"## {code(path.parent.name + '/')}", *_comparison(path)]
    return page(title or "A/B measurements", "the committed A/Bs in `reports/ab/`", parts)


def sentinel_page(reports: Path) -> str:
    folder = reports / "sentinel"
    title, readme = _readme(folder)
    rows = []
    for path in sorted(folder.glob("*.jsonl")):
        frame = pd.read_json(path, lines=True)
        levels = frame["samples_ms"].map(lambda samples: float(pd.Series(samples).median()))
        rows.append([code(path.name), str(len(frame)), view.latency(levels.median()),
                     view.latency(levels.min()), view.latency(levels.max())])  # fmt: skip
    parts = [readme] if readme else []
    parts += [
        "## The readings, summarised from the files",
        table(["file", "readings", "median level ms", "lowest ms", "highest ms"], rows),
    ]
    return page(title or "Noise sentinel readings", "the readings in `reports/sentinel/`", parts)


def index_page(reports: Path) -> str:
    title, readme = _readme(reports)
    rows = []
    for run_dir in run_dirs(reports):
        run = load_run(run_dir)
        name = slug(reports, run_dir)
        rows.append([f"[{code(run_dir.relative_to(reports).as_posix())}]({name}.md)", _devices(run.env),
                     run_summary(run), _when(run)])  # fmt: skip
    gpu_runs = sorted(p.name for p in reports.iterdir() if p.is_dir() and GPU_FOLDER.match(p.name))
    gpu_line = (
        "GPU runs committed: " + ", ".join(code(name) for name in gpu_runs) + "."
        if gpu_runs
        else "**No GPU run is committed**: `reports/` holds no `gpu-*` folder, so every figure here was "
        "measured on a CPU. See [GPU notes](../guides/gpu-notes.md) for what has and has not run on a GPU."
    )
    parts = [
        "Pages generated from the runs committed under `reports/`, each from the run's own files "
        "(`results.jsonl`, `numerics.jsonl`, `env.json`) through segbench's report code.",
        gpu_line,
        table(["run", "device", "outcome", "measured"], rows),
        "Also: the [A/B measurements](ab.md) of `reports/ab/` and the [noise sentinel's readings]"
        "(sentinel.md) of `reports/sentinel/`.",
    ]
    if readme:
        parts += ["## About these folders", f"From {code('reports/README.md')}:", readme]
    return page(title or "Committed results", "the committed runs in `reports/`", parts)


def results_pages(reports: Path) -> dict[str, str]:
    """Page path under ``docs/`` -> content."""
    pages = {"results/index.md": index_page(reports)}
    for run_dir in run_dirs(reports):
        pages[f"results/{slug(reports, run_dir)}.md"] = run_page(reports, run_dir)
    if (reports / "ab").is_dir():
        pages["results/ab.md"] = ab_page(reports)
    if (reports / "sentinel").is_dir():
        pages["results/sentinel.md"] = sentinel_page(reports)
    return pages
