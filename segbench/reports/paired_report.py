"""``segbench ab``'s comparison as rows, a headline, Markdown (a CI job summary) and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from segbench.reports import view
from segbench.reports.compare import DISTURBED, IMPROVEMENT, NOW_FAILING, REGRESSION
from segbench.reports.paired import MIN_PAIRS, ABComparison, PairedCell
from segbench.reports.render import CHECK_CHANGE_HEADERS, check_change_rows, markdown_table, regression_count
from segbench.results.verdicts import FIXED

PAIRED_HEADERS = (
    "cell", "base p50 ms", "head p50 ms", "change (fastest)", "95% interval", "p (slower)", "p (faster)",
    "pairs", "verdict",
)  # fmt: skip


def paired_rows(cells: Sequence[PairedCell]) -> list[tuple[list[str], str]]:
    """One row per cell: the medians of the clean pairs' p50s, the paired estimate (of the passes'
    fastest iterations) and its interval, the adjusted p-values, each pair's head/base ratio (``-`` for a
    pair left out as disturbed)."""
    rows = []
    for cell in cells:
        regressed = cell.verdict in (REGRESSION, NOW_FAILING)
        verdict = view.change_label(cell.verdict, regressed)
        verdict = f"{verdict}: {cell.note}" if cell.note else verdict
        if cell.memory_regression and not regressed:
            verdict = f"{view.change_label('memory regression', True)} ({verdict})"
        low, high = cell.interval or (None, None)
        ratios = " ".join(view.MISSING if r is None else f"{r:.2f}" for r in cell.pair_ratios)
        rows.append(
            (
                [
                    cell.label,
                    view.latency(cell.base_p50_ms),
                    view.latency(cell.head_p50_ms),
                    view.percent(cell.change),
                    "" if low is None else f"[{view.percent(low)}, {view.percent(high)}]",
                    view.p_value(cell.p_slower),
                    view.p_value(cell.p_faster),
                    ratios,
                    verdict,
                ],
                view.change_tone(
                    cell.verdict, regressed=cell.regressed, improved=cell.verdict in (IMPROVEMENT, FIXED)
                ),
            )
        )
    return rows


def ab_headline(comparison: ABComparison) -> str:
    settings = comparison.settings
    line = (
        f"{regression_count(comparison)}; {len(comparison.improvements)} improvement(s), "
        f"{len(comparison.cells)} cells over "
        f"{comparison.passes} interleaved pass pairs (a regression: head slower by more than "
        f"{view.share(settings.threshold)}, paired t-test on the passes' fastest-iteration ratios, "
        f"significant at {view.p_value(settings.alpha)}, Benjamini-Hochberg adjusted)"
    )
    disturbed = comparison.undecided  # an A/B on one machine: only disturbed cells
    if disturbed:
        moves = [p["move"] for p in comparison.pair_levels if p["move"] is not None]
        line += (f". {len(disturbed)} cell(s) DISTURBED, no verdict: fewer than {MIN_PAIRS} pairs where the "
                 f"noise sentinel stayed within {view.share(settings.sentinel_bound)} (largest move "
                 f"{view.percent(max(moves, default=0.0))})")  # fmt: skip
    return line


def ab_markdown(comparison: ABComparison) -> str:
    parts = [
        "# segbench ab",
        "",
        f"`{comparison.base}` (base) vs `{comparison.head}` (head), measured on one machine in "
        f"{comparison.passes} interleaved pass pairs",
        "",
        f"**{ab_headline(comparison)}**",
        "",
    ]
    if comparison.sides:
        parts += [
            markdown_table(("side", "ran"), [[name, str(what)] for name, what in comparison.sides.items()]),
            "",
        ]
    noteworthy = [c for c in comparison.cells if c.regressed or c.verdict in (IMPROVEMENT, FIXED, DISTURBED)]
    if noteworthy:
        parts += ["## Regressions, improvements, disturbed cells", "",
                  markdown_table(PAIRED_HEADERS, [c for c, _ in paired_rows(noteworthy)]), ""]  # fmt: skip
    accuracy = check_change_rows(comparison.accuracy_regressions)
    if accuracy:
        parts += [
            "## Accuracy regressions",
            "",
            markdown_table(CHECK_CHANGE_HEADERS, [c for c, _ in accuracy]),
            "",
        ]
    for title, names in (("New cells", comparison.new_cells), ("Missing cells", comparison.missing_cells)):
        if names:
            parts += [f"## {title}", "", *(f"- {name}" for name in names), ""]
    levels = [
        [str(p["pass"]), view.latency(p["base_ms"]), view.latency(p["head_ms"]), view.percent(p["move"])]
        for p in comparison.pair_levels
    ]
    parts += [
        "## Every cell",
        "",
        markdown_table(PAIRED_HEADERS, [c for c, _ in paired_rows(comparison.cells)]),
        "",
        f"## The noise sentinel per pair (bound {view.share(comparison.settings.sentinel_bound)})",
        "",
        markdown_table(("pair", "base side ms", "head side ms", "move"), levels),
        "",
    ]
    if comparison.checks:
        table = markdown_table(CHECK_CHANGE_HEADERS, [c for c, _ in check_change_rows(comparison.checks)])
        parts += ["<details><summary>Every matched numerics check</summary>", "", table, "", "</details>", ""]
    return "\n".join(parts)


def ab_json(comparison: ABComparison) -> str:
    return json.dumps(comparison.to_dict(), indent=2, allow_nan=False, default=str) + "\n"
