"""The data behind the report's timing figures: sweep lines per model and backend, and each cell's
speed-up over PyTorch fp32 (which the Markdown and HTML tables show too).

A cell that did not produce a measurement is kept with its status (``Series.failed``, a NaN speed-up with
its ``reason``), never turned into a zero and never silently left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from segbench.reports import view


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


def measured(value: Any) -> bool:
    """A usable positive measurement: a None, NaN or non-positive value is never plotted as a point."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0


def failure(row: Mapping[str, Any], column: str) -> str | None:
    """Why a cell has no point for ``column`` (its status), or None when it was measured."""
    if row["status"] != "ok":
        return str(row["status"])
    return None if measured(row[column]) else "no measurement"


def _with_model_labels(cells: pd.DataFrame) -> pd.DataFrame:
    """Add ``model_label``: the model name, plus its options only where one model ran with several
    option sets (every row repeating the same options would only crowd the labels)."""
    if "model_label" in cells.columns:
        return cells
    if cells.empty:
        return cells.assign(model_label=pd.Series(dtype=object))
    variants = cells.groupby("model", sort=False)["model_options"].nunique()
    labels = [
        view.model_label(model, options) if variants[model] > 1 else model
        for model, options in zip(cells["model"], cells["model_options"], strict=True)
    ]
    return cells.assign(model_label=labels)


def model_name(row: Mapping[str, Any]) -> str:
    return str(row.get("model_label") or row["model"])


def _config(row: Mapping[str, Any]) -> str:
    return f"{view.backend_label(row)} {row['device']} {row['precision']}"


def cell_label(row: Mapping[str, Any]) -> str:
    """How one cell is named in the figures: "model backend device precision size bN"."""
    return view.cell_label(row, model_name(row))


def records(cells: pd.DataFrame) -> list[dict[str, Any]]:
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
    for row in records(cells):
        model, config = model_name(row), _config(row)
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
        points = [(x_of(r), float(r[column])) for r in rows if failure(r, column) is None]
        failed = [(x_of(r), reason) for r in rows if (reason := failure(r, column)) is not None]
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


def is_sweep(series: Sequence[Series]) -> bool:
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
        if (reason := failure(row, "p50_ms")) is not None:
            row.update(speedup=math.nan, reason=f"failed: {reason}")
        elif row["torch_status"] != "ok" or not measured(row["torch_p50_ms"]):
            baseline = row["torch_status"] if row["torch_status"] != "ok" else "no measurement"
            row.update(speedup=math.nan, reason=f"baseline failed: {baseline}")
        else:
            row.update(speedup=float(row["torch_p50_ms"]) / float(row["p50_ms"]), reason="")
        row["label"] = cell_label(row)
        rows.append(row)
    # Indexed like ``cells``, so a table of all cells can look its rows' speed-ups up.
    return pd.DataFrame(rows, columns=columns, index=[row["_order"] for row in rows])


@dataclass(frozen=True)
class RooflinePoint:
    """One cell in the roofline figure: GFLOPs per image (x) and achieved TFLOP/s (y, None without a
    measurement, ``status`` then saying why). ``x`` is None where no cell of that model and size has a
    FLOP count to place it by."""

    model: str
    config: str
    batch: int
    x: float | None
    y: float | None
    status: str


def roofline_points(cells: pd.DataFrame) -> list[RooflinePoint]:
    """Every cell of a run that recorded achieved FLOP/s, in cell order. A run from before they were
    recorded has none, and gets no roofline figure rather than an empty one."""
    rows = records(cells)
    if not any(measured(row.get("achieved_tflops")) for row in rows):
        return []

    # A failed cell has no FLOP count of its own; the model's at that size places it all the same.
    def key(row: Mapping[str, Any]) -> tuple:
        return row["model"], row["model_options"], row["height"], row["width"]

    gflops = {key(row): row["gflops"] for row in reversed(rows) if measured(row.get("gflops"))}
    points = []
    for row in rows:
        x = gflops.get(key(row))
        reason = failure(row, "achieved_tflops")
        points.append(
            RooflinePoint(
                model=model_name(row),
                config=_config(row),
                batch=int(row["batch_size"]),
                x=None if x is None else float(x),
                y=None if reason else float(row["achieved_tflops"]),
                status=reason or "ok",
            )
        )
    return points


def peak_lines(env: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The run's measured peaks as ``("cpu fp32", TFLOP/s)``, highest first (env.json ``peak_tflops``)."""
    peaks = env.get("peak_tflops") or {}
    lines = [
        (f"{device} {precision}", float(value))
        for device, by_precision in peaks.items()
        for precision, value in (by_precision or {}).items()
        if measured(value)
    ]
    return sorted(lines, key=lambda line: -line[1])
