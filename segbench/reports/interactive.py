"""The HTML page of a report: its tables, its style, and the small inline script that sorts and filters.

A GPU sweep has hundreds of cells, so the big tables (every cell, every numerics check) sort by a click
on a column header and filter by the dimensions a sweep spans (model, backend, device, precision, size,
batch, status or verdict). The page stays one self-contained file: the script and the CSS are inline and
nothing is fetched. Without scripts the tables read as before; the sort buttons and the filter bar are
added by the script, so a page opened with scripts off shows no dead controls.

What the script needs is decided here, where the view model is known, not guessed in the browser:

- each row of a big table carries its filter values as data attributes (``data-backend="onnxruntime"``),
  taken from the view model, so a filter matches one field exactly (``failed``, not the error text);
- each cell whose text is a number carries that number as ``data-key`` (``44.18``, ``3.85x`` -> 3.85,
  ``38.2%`` -> 38.2, ``256x512`` -> its pixel count), and the header of a column of numbers says
  ``data-type="number"``, so p50 sorts 9 < 10 < 100 and a missing ``-`` sorts last either way.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence

import pandas as pd

from segbench.reports import view

Rows = list[tuple[list[str], str]]  # (cells, css class: a view tone, ok | fail | inconclusive | info)
Filters = list[dict[str, str]]  # per row: dimension -> value, the row's data-* attributes

# The dimensions a big table filters by, in the order of the filter bar.
CELL_DIMENSIONS = ("model", "backend", "device", "precision", "size", "batch", "status")
CHECK_DIMENSIONS = ("model", "backend", "device", "precision", "level", "verdict")

_SIZE = re.compile(r"(\d+)x(\d+)")
# A number as the view model spells one: 44.18, +0.000, 1.2e-07, 3.85x, +4.4%, 32 (0 moved).
_NUMBER = re.compile(r"([+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?:x|%)?(?: \(.*\))?")


def sort_key(text: str) -> float | None:
    """The number a cell's text stands for, or None where it is not a number (a name, a missing ``-``,
    an interval): a size ``256x512`` sorts by its pixel count, a speed-up, share or count by its value."""
    size = _SIZE.fullmatch(text)
    if size:
        return float(int(size[1]) * int(size[2]))
    found = _NUMBER.fullmatch(text)
    if not found:
        return None
    value = float(found[1])
    return value if math.isfinite(value) else None


def _numeric_columns(rows: Rows, width: int) -> list[bool]:
    """Which columns sort as numbers: those where numbers outnumber other non-missing text (a ``vs
    PyTorch`` column with one ``reference`` among speed-ups still sorts by the speed-ups)."""
    numbers, words = [0] * width, [0] * width
    for cells, _ in rows:
        for column, cell in enumerate(cells):
            text = str(cell)
            if sort_key(text) is not None:
                numbers[column] += 1
            elif text not in (view.MISSING, ""):
                words[column] += 1
    return [n > 0 and n >= w for n, w in zip(numbers, words, strict=True)]


def _attributes(values: Mapping[str, str]) -> str:
    return "".join(f' data-{name}="{html.escape(value, quote=True)}"' for name, value in values.items())


def html_table(headers: Sequence[str], rows: Rows, filters: Filters | None = None, name: str = "") -> str:
    """A table; with ``filters`` (one mapping per row) a big one, which the page's script makes sortable
    and filterable by those dimensions. ``name`` becomes its id, for links and tests."""
    if filters is None:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join(
            f'<tr class="{css}">' + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"
            for cells, css in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if len(filters) != len(rows):
        raise ValueError(f"{len(filters)} filter rows for {len(rows)} table rows")
    numeric = _numeric_columns(rows, len(headers))
    number_type = ' data-type="number"'
    head = "".join(
        f"<th{number_type if is_number else ''}>{html.escape(h)}</th>"
        for h, is_number in zip(headers, numeric, strict=True)
    )
    lines = []
    for (cells, css), values in zip(rows, filters, strict=True):
        tds = []
        for cell, is_number in zip(cells, numeric, strict=True):
            key = sort_key(str(cell)) if is_number else None
            data = "" if key is None else f' data-key="{key!r}"'
            tds.append(f"<td{data}>{html.escape(str(cell))}</td>")
        lines.append(f'<tr class="{css}"{_attributes(values)}>' + "".join(tds) + "</tr>")
    dimensions = html.escape(" ".join(filters[0]) if filters else "", quote=True)
    ident = f' id="{html.escape(name, quote=True)}"' if name else ""
    return (
        f'<table{ident} class="sortable" data-filters="{dimensions}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(lines)}</tbody></table>"
    )


def cell_filters(cells: pd.DataFrame) -> Filters:
    """Each timing cell's filter values, spelled as its row shows them, in the frame's order."""
    return [{name: getattr(view.cell_view(row), name) for name in CELL_DIMENSIONS}
            for _, row in cells.iterrows()]  # fmt: skip


def check_filters(checks: pd.DataFrame) -> Filters:
    """Each numerics row's filter values: its verdict is the word (``inconclusive``), not the note."""
    return [{name: getattr(view.check_view(row), name) for name in CHECK_DIMENSIONS}
            for _, row in checks.iterrows()]  # fmt: skip


CSS = r"""
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; }
tr.ok td:last-child { color: #176b2c; }
tr.fail td { background: #fde8e8; }
tr.fail td:last-child { color: #a11; font-weight: bold; }
tr.info td:last-child { color: #555; }
tr.inconclusive td { background: #fff6e0; }
tr.inconclusive td:last-child { color: #8a5a00; font-weight: bold; }
figure { margin: 1.5em 0; }
img { max-width: 100%; border: 1px solid #ddd; }
.summary { font-size: 1.1em; font-weight: bold; }
table.sortable thead th { position: sticky; top: 0; }
th button.sort { font: inherit; color: inherit; background: none; border: 0; padding: 0; cursor: pointer;
  text-align: inherit; }
th[aria-sort="ascending"] button.sort::after { content: " \25B2"; }
th[aria-sort="descending"] button.sort::after { content: " \25BC"; }
.filters { display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; align-items: center; font-size: 0.9em; }
.filters select { margin-left: 0.3em; }
.filters .count { color: #555; }
"""

# Sorting keeps rows without a number (a failed cell's ``-``) last in both directions, so flipping the
# order never buries the measured rows under the failed ones. Filters combine: a row shows when it
# matches every select. Values are compared whole, never as substrings.
SCRIPT = """
(() => {
  "use strict";
  const collator = new Intl.Collator(undefined, { numeric: true });

  function sortBy(table, header) {
    const column = header.cellIndex;
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    const numeric = header.dataset.type === "number";
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    const keyed = numeric ? rows.filter((row) => "key" in row.cells[column].dataset) : rows;
    const rest = numeric ? rows.filter((row) => !("key" in row.cells[column].dataset)) : [];
    const sign = ascending ? 1 : -1;
    keyed.sort((a, b) => {
      const x = a.cells[column], y = b.cells[column];
      const order = numeric ? Number(x.dataset.key) - Number(y.dataset.key)
        : collator.compare(x.textContent, y.textContent);
      return sign * order;
    });
    for (const row of keyed.concat(rest)) body.appendChild(row);
    for (const other of table.tHead.rows[0].cells) other.removeAttribute("aria-sort");
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }

  function makeSortable(table) {
    for (const header of table.tHead.rows[0].cells) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.title = "sort by " + header.textContent;
      button.append(...header.childNodes);
      header.appendChild(button);
      header.addEventListener("click", () => sortBy(table, header));
    }
  }

  function addFilters(table) {
    const rows = Array.from(table.tBodies[0].rows);
    const bar = document.createElement("div");
    bar.className = "filters";
    if (table.id) bar.dataset.table = table.id;
    const selects = [];
    for (const dimension of table.dataset.filters.split(" ").filter(Boolean)) {
      const values = [...new Set(rows.map((row) => row.getAttribute("data-" + dimension)))]
        .filter((value) => value !== null).sort(collator.compare);
      if (values.length < 2) continue;  // one value filters nothing
      const label = document.createElement("label");
      label.textContent = dimension;
      const select = document.createElement("select");
      select.name = dimension;
      select.add(new Option("all", ""));
      for (const value of values) select.add(new Option(value, value));
      select.addEventListener("change", apply);
      label.appendChild(select);
      bar.appendChild(label);
      selects.push(select);
    }
    if (!selects.length) return;
    const count = document.createElement("span");
    count.className = "count";
    count.setAttribute("aria-live", "polite");
    bar.appendChild(count);
    table.before(bar);

    function apply() {
      let shown = 0;
      for (const row of rows) {
        // selectedIndex 0 is "all": an empty value in the data never reads as "no filter".
        const match = selects.every((select) => select.selectedIndex === 0
          || row.getAttribute("data-" + select.name) === select.value);
        row.hidden = !match;
        if (match) shown += 1;
      }
      count.textContent = shown + " of " + rows.length + " rows";
    }
    apply();
  }

  for (const table of document.querySelectorAll("table.sortable")) {
    makeSortable(table);
    addFilters(table);
  }
})();
"""


def page(title: str, body: list[str]) -> str:
    """The whole document: inline style, the body, then the script (which runs once the tables exist)."""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{CSS}</style>",
            "</head><body>",
            *body,
            f"<script>{SCRIPT}</script>",
            "</body></html>",
            "",
        ]
    )
