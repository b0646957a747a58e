"""The report's ``numerics_verdicts`` figure: every numerics verdict as a coloured table.

Three verdicts, three colours: pass (green), FAIL (red: a confident shift out of the band, or a check that
could not run), inconclusive (amber: too few images to tell); baselines and rows without a verdict grey.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from segbench.reports.figures import (
    CAPTION_IN,
    CELL_PAD_IN,
    decorate,
    format_number,
    literal,
    new_figure,
    text_width_in,
)
from segbench.results.verdicts import FAIL, INCONCLUSIVE, band_of, images_of, interval_of, missing, verdict_of

NUMERICS_TITLE = "Numerics verdicts against the PyTorch fp32 baseline"
# Light row tint and stronger verdict-cell colour per verdict kind.
_VERDICT_COLOURS = {
    "pass": ("#eef7ee", "#a5d6a7"),
    "FAIL": ("#fdecea", "#ef9a9a"),
    "inconclusive": ("#fff6e0", "#ffcc80"),
    "grey": ("#f4f4f4", "#d0d0d0"),
}
# The leading table columns that identify a group of verdict rows.
_GROUP_COLUMNS = 4
_TABLE_COLUMNS = (
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
)


def _short(text: str, limit: int = 40) -> str:
    # Keep the table readable; the full text is in numerics.jsonl and the HTML table.
    return f"{text[:limit]}{'…' if len(text) > limit else ''}"


def _verdict(row: Mapping[str, Any]) -> str:
    if row["role"] == "baseline":
        return "baseline"
    verdict = verdict_of(row)
    text = "info" if verdict is None else "FAIL" if verdict == FAIL else verdict
    error = row.get("error")
    if text != "pass" and not missing(error) and isinstance(error, str):
        return f"{text}: {_short(error)}"
    if verdict == INCONCLUSIVE:
        _, needed, _ = images_of(row)
        return f"{text}: ~{needed} images needed" if needed else f"{text}: too few images"
    return text


def _interval(low: float | None, high: float | None, spec: str) -> str:
    return "" if low is None or high is None else f"[{low:{spec}}, {high:{spec}}]"


def verdict_table(checks: pd.DataFrame) -> pd.DataFrame:
    """The figure's rows as display strings (diagnosis rows left out), columns as in the figure."""
    rows = []
    for row in checks.to_dict("records") if len(checks) else []:
        if row.get("level") == "diagnosis":
            continue
        tensor = row.get("level") == "tensor"
        if row["role"] == "baseline":
            band = ""
        elif tensor:
            bound = "≤" if row.get("bound") == "max" else "≥"
            band = format_number(row["tolerance"], ".4g")
            band = band if band == "-" else bound + band
        else:
            band = _interval(*band_of(row), "+.2f")
        rows.append(
            {
                "model": row["model"],
                "backend": row["backend_label"],
                "device": row["device"],
                "precision": row["precision"],
                "metric": row["metric"],
                # Tensor errors are tiny fractions: fixed decimals would print them as 0.
                "value": format_number(row["value"], ".4g" if tensor else ".2f"),
                "baseline": format_number(row["baseline"], ".2f"),
                "delta": format_number(row["delta"], "+.3f"),
                "interval": _interval(*interval_of(row), "+.3f"),
                "band": band,
                "verdict": _verdict(row),
            }
        )
    return pd.DataFrame(rows, columns=list(_TABLE_COLUMNS))


def verdict_kind(verdict: str) -> str:
    """``pass``, ``FAIL``, ``inconclusive`` or ``grey`` (baseline, info) for a verdict cell's text."""
    head = verdict.split(":", 1)[0]
    return head if head in ("pass", "FAIL", "inconclusive") else "grey"


def numerics_figure(checks: pd.DataFrame, caption: str) -> Figure | None:
    table = verdict_table(checks)
    if table.empty:
        return None
    body = [[literal(v) for v in row] for row in table.astype(str).values.tolist()]
    # Column widths from the measured text: the table fills an axes placed in inches.
    widths = [
        text_width_in([column, *(r[c] for r in body)], 7) + 3 * CELL_PAD_IN
        for c, column in enumerate(_TABLE_COLUMNS)
    ]
    # Show model, backend, device and precision only where they change: the rows read as groups, and the
    # table draws a third fewer texts (text is most of its render time).
    shown = [list(row) for row in body]
    for i in range(len(body) - 1, 0, -1):
        for c in range(_GROUP_COLUMNS):
            if body[i][: c + 1] == body[i - 1][: c + 1]:
                shown[i][c] = ""
    text = [list(_TABLE_COLUMNS), *shown]
    row_in, top, bottom = 0.2, 0.6, CAPTION_IN + 0.05
    table_w, table_h = sum(widths), row_in * len(text)
    width, height = max(8.0, table_w + 0.4), top + table_h + bottom
    fig = new_figure(width, height)
    left = (width - table_w) / 2
    ax = fig.add_axes((left / width, bottom / height, table_w / width, table_h / height))
    ax.axis("off")
    kinds = table["verdict"].map(verdict_kind)
    colours = []
    for kind in kinds:
        row_tint, verdict_colour = _VERDICT_COLOURS[kind]
        colours.append([row_tint] * (len(_TABLE_COLUMNS) - 1) + [verdict_colour])
    drawn = ax.table(
        cellText=text[1:],
        colLabels=text[0],
        cellColours=colours,
        colColours=["#dddddd"] * len(_TABLE_COLUMNS),
        colWidths=[w / table_w for w in widths],
        bbox=(0, 0, 1, 1),
        cellLoc="left",
    )
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(7)
    for (_, column), table_cell in drawn.get_celld().items():
        table_cell.PAD = CELL_PAD_IN / widths[column]
    failed, inconclusive = int((kinds == "FAIL").sum()), int((kinds == "inconclusive").sum())
    title = f"{NUMERICS_TITLE} ({len(table)} checks, {failed} FAIL, {inconclusive} inconclusive)"
    decorate(fig, title, caption, top)
    return fig
