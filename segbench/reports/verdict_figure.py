"""The report's ``numerics_verdicts`` figure: every numerics verdict as a coloured table.

Three verdicts, three colours: pass (green), FAIL (red: a confident shift out of the band, or a check that
could not run), inconclusive (amber: too few images to tell); baselines and rows without a verdict grey.
The cells are the view model's strings (:mod:`segbench.reports.view`), as in the Markdown table.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from segbench.reports import view
from segbench.reports.figures import CAPTION_IN, CELL_PAD_IN, decorate, literal, new_figure, text_width_in
from segbench.results.verdicts import FAIL, INCONCLUSIVE

NUMERICS_TITLE = "Numerics verdicts against the PyTorch fp32 baseline"
# Light row tint and stronger verdict-cell colour per tone of the view model.
_TONE_COLOURS = {
    view.OK_TONE: ("#eef7ee", "#a5d6a7"),
    view.FAIL_TONE: ("#fdecea", "#ef9a9a"),
    view.INCONCLUSIVE_TONE: ("#fff6e0", "#ffcc80"),
    view.INFO_TONE: ("#f4f4f4", "#d0d0d0"),
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


def _views(checks: pd.DataFrame) -> list[view.CheckView]:
    """The figure's rows (diagnosis rows left out: they carry no verdict)."""
    rows = checks.to_dict("records") if len(checks) else []
    return [view.check_view(row) for row in rows if row.get("level") != "diagnosis"]


def verdict_table(checks: pd.DataFrame) -> pd.DataFrame:
    """The figure's rows as display strings, columns as in the figure."""
    rows = [
        {
            "model": v.model,
            "backend": v.backend,
            "device": v.device,
            "precision": v.precision,
            "metric": v.metric,
            "value": v.value,
            "baseline": v.baseline,
            "delta": v.delta,
            "interval": v.interval,
            "band": v.band,
            "verdict": view.with_note(v.verdict, _short(v.note)),
        }
        for v in _views(checks)
    ]
    return pd.DataFrame(rows, columns=list(_TABLE_COLUMNS))


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
    tones = [v.tone for v in _views(checks)]
    colours = []
    for tone in tones:
        row_tint, verdict_colour = _TONE_COLOURS[tone]
        colours.append([row_tint] * (len(_TABLE_COLUMNS) - 1) + [verdict_colour])
    drawn = ax.table(
        cellText=text[1:],
        colLabels=text[0],
        cellColours=colours,
        colColours=["#dddddd"] * len(_TABLE_COLUMNS),
        colWidths=[w / table_w for w in widths],
        bbox=Bbox.from_bounds(0, 0, 1, 1),
        cellLoc="left",
    )
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(7)
    for (_, column), table_cell in drawn.get_celld().items():
        table_cell.PAD = CELL_PAD_IN / widths[column]
    failed, inconclusive = tones.count(view.FAIL_TONE), tones.count(view.INCONCLUSIVE_TONE)
    counted = f"{failed} {view.verdict_label(FAIL)}, {inconclusive} {view.verdict_label(INCONCLUSIVE)}"
    title = f"{NUMERICS_TITLE} ({len(table)} checks, {counted})"
    decorate(fig, title, caption, top)
    return fig
