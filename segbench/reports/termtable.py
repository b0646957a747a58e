"""Terminal tables that stay readable in 80 columns and when piped.

rich fits a table to the console by squeezing every column and ellipsising what no longer fits, so in 80
columns (what rich assumes when stdout is not a terminal) ``segbench models | grep mask_rcnn`` found
nothing: the name had become ``mask_r…``. :class:`FitTable` lays its columns out itself, at render time,
for the width it is given:

- key columns (the model, backend, precision, size, metric, verdict) are never cut and never dropped:
  a ``KEY`` column stays on one line; a ``WORDS`` column too unless even dropping every optional column
  leaves no room for that, and then it wraps between words, never inside one; a ``NOTE`` column (a
  verdict with its explanation) wraps between words to the room left;
- ``VALUE`` columns (numbers, short values) are shown whole or not at all;
- ``TEXT`` columns (errors, notes, descriptions) fold to the width left to them.

It tries the usual boxed table first; when that is too wide, a compact one (no borders, one space between
columns), dropping optional columns in their ``drop`` order until the rest fits. Widths are then fixed
per column (``Column.width``), so rich renders the layout as chosen instead of squeezing it again. Only a
console too narrow for the key columns alone gets a table whose key columns fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.table import Table
from rich.text import Text

KEY = "key"
WORDS = "words"
NOTE = "note"
VALUE = "value"
TEXT = "text"
# A folding column narrower than this reads badly: drop a column before folding below it.
FOLD_MIN = 16


@dataclass(frozen=True)
class Col:
    """A column: its header, its kind (KEY, WORDS, NOTE, VALUE, TEXT), its justification, and for optional
    columns (VALUE, TEXT) the order in which they go when the console is too narrow (1 goes first)."""

    header: str
    kind: str = KEY
    drop: int = 0
    justify: JustifyMethod = "left"

    @property
    def optional(self) -> bool:
        return self.kind in (VALUE, TEXT)


@dataclass(frozen=True)
class _Style:
    boxed: bool

    def overhead(self, columns: int) -> int:
        # Boxed: one cell of padding each side of every column, a border between columns and two edges.
        # Compact: no padding, no edges, one blank between columns.
        return 3 * columns + 1 if self.boxed else max(columns - 1, 0)

    def table(self, **kwargs: Any) -> Table:
        if self.boxed:
            return Table(**kwargs)
        return Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0), **kwargs)


BOXED, COMPACT = _Style(boxed=True), _Style(boxed=False)


def _lines(markup: str) -> list[str]:
    return Text.from_markup(markup).plain.splitlines() or [""]


def _longest_word(texts: Sequence[str]) -> int:
    return max((len(word) for text in texts for word in text.split()), default=0)


class FitTable:
    """A rich renderable table whose layout is chosen for the console width it is printed at."""

    def __init__(self, title: str | None, columns: Sequence[Col], caption: str | None = None) -> None:
        self.title = title
        self.caption = caption
        self.columns = list(columns)
        self.rows: list[tuple[list[str], str | None]] = []

    def add_row(self, *cells: str, style: str | None = None) -> None:
        """``cells`` are rich markup (escape user text), one per column."""
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append((list(cells), style))

    @property
    def row_count(self) -> int:
        return len(self.rows)

    # -- layout ---------------------------------------------------------------------------------

    def _widths(self, index: int, wrap_words: bool) -> tuple[int, int]:
        """(narrowest acceptable, natural) content width of column ``index``; ``wrap_words``: whether
        a WORDS column may wrap between its words."""
        column = self.columns[index]
        lines = [line for cells, _ in self.rows for line in _lines(cells[index])]
        header_word = _longest_word([column.header])
        natural = max([len(column.header), *(len(line) for line in lines)])
        longest_word = max(header_word, _longest_word(lines))
        if column.kind == NOTE or (column.kind == WORDS and wrap_words):
            narrowest = max(longest_word, min(natural, FOLD_MIN)) if column.kind == NOTE else longest_word
        elif column.kind == TEXT:
            narrowest = min(natural, FOLD_MIN)
        else:  # KEY, VALUE and one-line WORDS cells stay on one line; only a header may wrap
            narrowest = max([header_word, *(len(line) for line in lines)])
        return max(narrowest, 1), max(natural, 1)

    def _candidates(self) -> list[tuple[_Style, list[int]]]:
        everything = list(range(len(self.columns)))
        optional = sorted(
            (i for i in everything if self.columns[i].optional),
            key=lambda i: (self.columns[i].drop, -i),
        )
        candidates = [(BOXED, everything), (COMPACT, everything)]
        kept = list(everything)
        for index in optional:
            kept = [i for i in kept if i != index]
            candidates.append((COMPACT, kept))
        return candidates

    def layout(self, width: int) -> tuple[_Style, list[int], list[int]] | None:
        """The style, the kept columns and their content widths for a console ``width`` wide; None
        when even the key columns alone do not fit. Key columns on one line come first: optional
        columns are dropped before a WORDS column wraps."""
        for wrap_words in (False, True):
            measured = [self._widths(i, wrap_words) for i in range(len(self.columns))]
            for style, kept in self._candidates():
                widths = [measured[i][0] for i in kept]
                spare = width - style.overhead(len(kept)) - sum(widths)
                if spare < 0:
                    continue
                # Wrapped key columns first, back to one line where possible; then the columns that
                # fold, the narrowest first (water-filling), so no one column takes all that is left.
                for position, index in enumerate(kept):
                    if self.columns[index].kind == WORDS:
                        grow = min(spare, measured[index][1] - widths[position])
                        widths[position] += grow
                        spare -= grow
                folding = [p for p, i in enumerate(kept) if self.columns[i].kind in (NOTE, TEXT)]
                while spare > 0:
                    hungry = [p for p in folding if widths[p] < measured[kept[p]][1]]
                    if not hungry:
                        break
                    widths[min(hungry, key=lambda p: widths[p])] += 1
                    spare -= 1
                return style, kept, widths
        return None

    def build(self, width: int) -> Table:
        """The rich Table laid out for ``width`` columns."""
        found = self.layout(width)
        if found is None:
            # Narrower than the key columns: keep only them and let them fold (still never ellipsised).
            style, kept, widths = COMPACT, [i for i, c in enumerate(self.columns) if not c.optional], None
        else:
            style, kept, widths = found
        table = style.table(title=self.title, caption=self.caption, title_justify="left")
        for position, index in enumerate(kept):
            column = self.columns[index]
            table.add_column(
                column.header,
                justify=column.justify,
                overflow="fold",
                width=None if widths is None else widths[position],
            )
        for cells, style_name in self.rows:
            table.add_row(*(cells[i] for i in kept), style=style_name)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.build(options.max_width)
