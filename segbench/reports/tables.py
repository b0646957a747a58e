"""Rich tables for the terminal: benchmark cells, numerics verdicts, the model registry."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.markup import escape

from segbench.reports import view
from segbench.reports.termtable import NOTE, TEXT, VALUE, WORDS, Col, FitTable
from segbench.results.verdicts import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    band_of,
    images_of,
    interval_of,
    missing,
    number,
    verdict_of,
)

# How each tone of the view model is coloured on the terminal.
STYLES = {
    view.OK_TONE: "green",
    view.FAIL_TONE: "bold red",
    view.INCONCLUSIVE_TONE: "yellow",
    view.INFO_TONE: "cyan",
}


def styled(text: str, tone: str) -> str:
    """``text`` (escaped here) in the terminal colour of ``tone``."""
    return f"[{STYLES[tone]}]{escape(text)}[/]"


def backend_label(row: dict[str, Any]) -> str:
    """``torch`` or ``torch (channels_last=True)``: the backend plus its non-default options."""
    return view.backend_label(row)


def results_table(results: Iterable[dict[str, Any]]) -> FitTable:
    results = list(results)
    repeated = any(r.get("repeat", 0) > 0 for r in results)
    errors = any(r["status"] != "ok" and r.get("error") for r in results)
    columns = [
        Col("model"),
        Col("backend", WORDS),
        Col("device", VALUE, drop=4),
        Col("prec"),
        Col("size"),
        Col("batch", justify="right"),
        *((Col("pass", VALUE, drop=5, justify="right"),) if repeated else ()),
        Col("p50", VALUE, drop=8, justify="right"),
        Col("p90", VALUE, drop=2, justify="right"),
        Col("mean", VALUE, drop=1, justify="right"),
        Col("img/s", VALUE, drop=6, justify="right"),
        Col("of peak", VALUE, drop=2, justify="right"),
        Col(f"host {view.MEMORY_UNIT}", VALUE, drop=3, justify="right"),
        Col("status"),
        *((Col("error", TEXT, drop=7),) if errors else ()),
    ]
    table = FitTable("Benchmark (end-to-end: preprocess + forward + postprocess, ms)", columns)
    for r in results:
        cell = view.cell_view(r)
        ok = cell.status == "ok"
        table.add_row(
            escape(cell.model),
            escape(cell.backend),
            cell.device,
            cell.precision,
            cell.size,
            cell.batch,
            *((str(r.get("repeat", 0) + 1),) if repeated else ()),
            cell.p50,
            cell.p90,
            cell.mean,
            cell.throughput,
            cell.peak_fraction,
            cell.peak_host,
            styled(cell.status, cell.tone),
            *((escape(cell.error) if not ok else "",) if errors else ()),
        )
    return table


def numerics_table(rows: Iterable[dict[str, Any]]) -> FitTable:
    """Task-level rows (metric points against the baseline: the deviation, its confidence interval and
    the band it must lie in) and tensor-level rows (the judged raw-output statistic and its bound)."""
    views = [view.check_view(row) for row in rows]
    notes = any(v.note for v in views)
    columns = [
        Col("model"),
        Col("backend", WORDS),
        Col("device", VALUE, drop=3),
        Col("prec"),
        Col("metric", WORDS),
        Col("value", VALUE, drop=2, justify="right"),
        Col("baseline", VALUE, drop=1, justify="right"),
        Col("delta", VALUE, drop=8, justify="right"),
        Col("interval", VALUE, drop=6, justify="right"),
        Col("band", VALUE, drop=5, justify="right"),
        Col("images", VALUE, drop=4, justify="right"),
        Col("verdict"),
        *((Col("note", TEXT, drop=7),) if notes else ()),
    ]
    table = FitTable("Numerics against the PyTorch fp32 baseline (points)", columns)
    for v in views:
        table.add_row(
            escape(v.model),
            escape(v.backend),
            v.device,
            v.precision,
            escape(v.metric),
            v.value,
            v.baseline,
            v.delta,
            v.interval,
            v.band,
            v.images,
            styled(v.verdict, v.tone),
            *((escape(v.note),) if notes else ()),
        )
    return table


def models_table(rows: Iterable[dict[str, Any]], height: int, width: int) -> FitTable:
    columns = [
        Col("name"),
        Col("task"),
        Col("weights"),
        Col("options", TEXT, drop=3),
        Col("params (M)", VALUE, drop=5, justify="right"),
        Col("GFLOPs", VALUE, drop=4, justify="right"),
        Col("validation", TEXT, drop=2),
        Col("description", TEXT, drop=1),
    ]
    table = FitTable(f"Models (GFLOPs at 1x3x{height}x{width})", columns)
    for row in rows:
        table.add_row(
            escape(row["name"]),
            row["task"],
            row["weights"],
            escape(row["options"]),
            view.fixed(row["params"] / 1e6),
            view.fixed(row["gflops"]),
            escape(row["validation"] or view.MISSING),
            escape(row["description"]),
        )
    return table


# How the columns of the other terminal tables (compare's, the environment) fit 80 columns: the cell or
# check and the verdict stay whole; numbers go before they would be cut.
_COLUMNS_BY_HEADER = {
    "cell": Col("cell", WORDS),
    "check": Col("check", WORDS),
    "verdict": Col("verdict", NOTE),
    "baseline p50 ms": Col("baseline p50 ms", VALUE, drop=6, justify="right"),
    "current p50 ms": Col("current p50 ms", VALUE, drop=7, justify="right"),
    "p50 change": Col("p50 change", VALUE, drop=8, justify="right"),
    "throughput change": Col("throughput change", VALUE, drop=2, justify="right"),
    "p (slower)": Col("p (slower)", VALUE, drop=3, justify="right"),
    "p (faster)": Col("p (faster)", VALUE, drop=1, justify="right"),
    "samples": Col("samples", VALUE, drop=4, justify="right"),
    "memory": Col("memory", TEXT, drop=5),
    "baseline": Col("baseline", VALUE, drop=4, justify="right"),
    "current": Col("current", VALUE, drop=5, justify="right"),
    "change": Col("change", VALUE, drop=7, justify="right"),
    "interval": Col("interval", VALUE, drop=3, justify="right"),
    "allowed": Col("allowed", VALUE, drop=2, justify="right"),
    "verdicts": Col("verdicts", VALUE, drop=6),
    "field": Col("field", WORDS),
    "what": Col("what", WORDS),
    "value": Col("value", TEXT, drop=1),
}


def text_table(
    title: str,
    headers: Sequence[str | Col],
    rows: Iterable[Sequence[str]],
    styles: Iterable[str | None] = (),
) -> FitTable:
    """A terminal table of plain-text rows (escaped here). A header given as a name fits as that name
    says (``cell``, ``verdict``, ``p50 change``...; an unknown one folds like text)."""
    columns = [
        h if isinstance(h, Col) else _COLUMNS_BY_HEADER.get(h, Col(h, TEXT, drop=i + 1))
        for i, h in enumerate(headers)
    ]
    table = FitTable(title, columns)
    styles = iter(styles)
    for cells in rows:
        table.add_row(*(escape(str(cell)) for cell in cells), style=next(styles, None))
    return table


def readiness_table(report: Any) -> FitTable:
    """A TensorRT readiness report: the ops the graph uses, then each finding."""
    ops = ", ".join(f"{op} x{count}" for op, count in sorted(report.op_counts.items()))
    columns = [Col("severity"), Col("where", WORDS), Col("finding", TEXT, drop=1)]
    table = FitTable(f"TensorRT readiness of {report.path} (opset {report.opset})", columns, caption=ops)
    for finding in report.findings:
        style = {"error": "red", "warning": "yellow"}.get(finding.severity, "cyan")
        table.add_row(f"[{style}]{finding.severity}[/]", escape(finding.where), escape(finding.message))
    return table


def parity_table(export: Any) -> FitTable:
    """An export's parity against PyTorch: per input shape, each judged quantity with its value, bound
    and verdict; the informational numbers in the caption, away from the verdicts."""
    from segbench.export.parity import PARITY_TOLERANCES, check_text, parity_notes, shape_text

    words = {True: view.verdict_label(PASS), False: view.verdict_label(FAIL)}
    verdict = {passed: styled(word, view.tone(word)) for passed, word in words.items()}
    overall = verdict[all(report.passed for report in export.parity)]
    columns = [Col("input"), Col("judged on", WORDS), Col("value", VALUE, drop=1, justify="right"),
               Col("bound", VALUE, drop=2), Col("verdict", justify="right")]  # fmt: skip
    caption = "\n".join(parity_notes(export.parity, PARITY_TOLERANCES.get(export.precision))) or None
    table = FitTable(
        f"{export.precision} ONNX vs PyTorch at shapes other than the traced one: {overall}", columns, caption
    )
    for report in export.parity:
        rows = [(escape(c.name), *check_text(c), verdict[c.passed]) for c in report.checks]
        if report.error:
            rows.append((escape(report.error), "", "", verdict[False]))
        if not rows:  # nothing was judged (a report from before checks were recorded)
            rows.append((view.MISSING, "", "", verdict[report.passed]))
        for position, row in enumerate(rows):
            table.add_row(shape_text(report.shape) if position == 0 else "", *row)
    return table


# -- the run's last words -----------------------------------------------------------------------------

# Failed cells and failed or inconclusive checks named one per line; past these many, a count.
OUTCOME_NAMED = 10


def _first_line(text: Any, limit: int = 120) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def cell_name(row: dict[str, Any]) -> str:
    """``unet onnxruntime cpu fp32 256x256 b4``."""
    return view.cell_label(row)


def check_name(row: dict[str, Any]) -> str:
    """``unet onnxruntime cpu fp16 miou``."""
    return view.check_label(row)


def check_detail(row: dict[str, Any]) -> str:
    """Why a check failed or is inconclusive, in one phrase: the deviation, its interval and the band
    (``-0.640 [-1.127, -0.043] vs band [-0.61, +1.50]``), a tensor statistic against its bound, or
    the error that kept the check from running."""
    if not missing(row.get("error")):
        return _first_line(row["error"])
    if row.get("level") == "tensor":
        value, limit = number(row.get("value")), view.limit_text(row)
        if value is None or not limit:
            return "no value"
        return f"{view.statistic(value)} vs {limit}"
    delta = number(row.get("delta"))
    text = "no value" if delta is None else view.delta(delta)
    interval = view.interval(*interval_of(row))
    band = view.band(*band_of(row))
    text += f" {interval}" if interval else ""
    text += f" vs band {band}" if band else ""
    if verdict_of(row) == INCONCLUSIVE:
        images, needed, _ = images_of(row)
        text += f", on {images} images" if images else ""
        text += f"; {view.needed(needed)}" if images else f", {view.needed(needed)}"
    return text


def outcome_line(results: Iterable[dict[str, Any]], numerics: Iterable[dict[str, Any]], out_dir: Any) -> str:
    """What a run came to, for its last words on the terminal: the counts and where the results are,
    then each failed cell and each failed or inconclusive check by name (plain text, no markup):

        46 cells (1 failed), 47 numerics checks (1 failed, 1 inconclusive) -> runs/x
          failed cell   unet onnxruntime cuda fp16 256x256 b4: failed (RuntimeError: out of memory)
          FAIL          mask_rcnn onnxruntime cpu fp16 segm_ap: -0.640 [-1.127, -0.043] vs band [...]
          inconclusive  unet onnxruntime cpu fp32 miou: -0.120 [-0.600, +0.300] vs band [...], ...
    """
    results = list(results)
    checks = [r for r in numerics if r.get("role") == "candidate" and r.get("level") != "diagnosis"]
    failed_cells = [r for r in results if r["status"] != "ok"]
    failed = [r for r in checks if verdict_of(r) == FAIL]
    inconclusive = [r for r in checks if verdict_of(r) == INCONCLUSIVE]
    cells = f"{len(results)} cells ({len(failed_cells)} failed), " if results else ""
    head = (
        f"{cells}{len(checks)} numerics checks ({len(failed)} failed, {len(inconclusive)} inconclusive) "
        f"-> {out_dir}"
    )
    named = []
    for r in failed_cells:
        error = f" ({_first_line(r['error'])})" if r.get("error") else ""
        named.append(("failed cell", f"{cell_name(r)}: {r['status']}{error}"))
    named += [(view.verdict_label(FAIL), f"{check_name(r)}: {check_detail(r)}") for r in failed]
    named += [(view.verdict_label(INCONCLUSIVE), f"{check_name(r)}: {check_detail(r)}") for r in inconclusive]
    lines = [head, *(f"  {kind:<13} {text}" for kind, text in named[:OUTCOME_NAMED])]
    if len(named) > OUTCOME_NAMED:
        lines.append(
            f"  ... and {len(named) - OUTCOME_NAMED} more (results.jsonl, numerics.jsonl in {out_dir})"
        )
    return "\n".join(lines)
