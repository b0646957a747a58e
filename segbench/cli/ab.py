"""``segbench ab`` (an A/B of two commits or two environments on this machine) and ``segbench ab-side``
(one side of it, started by ``ab`` itself)."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.markup import escape


def cmd_ab(args: argparse.Namespace, console: Console) -> int:
    """Exit 1 on a regression; else 3 when a cell was disturbed (no decision); else 0; 2 on bad input."""
    from segbench.ab.session import COMPARISON_MD, ABRequest, SideFailed, run_ab
    from segbench.reports.compare import CompareSettings
    from segbench.reports.paired_report import PAIRED_HEADERS, ab_headline, paired_rows
    from segbench.reports.tables import text_table

    settings = CompareSettings(threshold=args.threshold, alpha=args.alpha, sentinel_bound=args.sentinel_bound)
    request = ABRequest(args.config, args.base, args.head, args.out, args.base_python, args.passes, settings)

    def say(line: str) -> None:
        console.print(escape(line), highlight=False)

    try:
        comparison = run_ab(request, say)
    except SideFailed as exc:  # a side crashed mid-way: a failure, not bad input
        print(f"segbench: error: {exc}", file=sys.stderr)
        return 1
    styles = {"fail": "red", "ok": "green", "inconclusive": "yellow", "info": None, "": None}
    rows = paired_rows(comparison.cells)
    console.print(
        text_table("A/B, cell by cell", PAIRED_HEADERS, [c for c, _ in rows], [styles[t] for _, t in rows])
    )
    console.print(f"comparison: {args.out / COMPARISON_MD}")
    style = "red" if comparison.exit_code == 1 else "yellow" if comparison.exit_code else "green"
    console.print(f"[{style}]{escape(ab_headline(comparison))}[/]")
    return comparison.exit_code


def cmd_ab_side(args: argparse.Namespace, console: Console) -> int:
    from segbench.ab.worker import protocol_streams, serve
    from segbench.bench.progress import ConsoleProgress

    channel, commands = protocol_streams()
    progress = ConsoleProgress(Console(stderr=True))
    return serve(args.config, args.out, args.repeats, channel, commands, listeners=[progress])
