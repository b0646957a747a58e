"""Markdown and HTML renderings of a run and of a comparison.

Both formats are built from the same rows (headers plus string cells), so the PR comment and the HTML page
say the same thing. The Markdown is GitHub-flavoured (fit for a pull-request comment or
``$GITHUB_STEP_SUMMARY``); the HTML is one self-contained file: inline CSS, plots embedded as base64
``data:`` URIs, an inline script that sorts and filters the big tables (:mod:`.interactive`), nothing
fetched from the network.

pandas' ``to_markdown`` needs the optional ``tabulate`` package and its ``to_html`` cannot colour rows by
verdict, hence the small table writers: Markdown here, HTML in :mod:`.interactive`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

from segbench.env import environment_rows
from segbench.reports import view
from segbench.reports.compare import (
    DISTURBED,
    IMPROVEMENT,
    MACHINE_CHANGED,
    NOW_FAILING,
    WITHIN_NOISE,
    Comparison,
    VerdictTally,
)
from segbench.reports.interactive import Rows, cell_filters, check_filters, html_table, page
from segbench.reports.rundata import RunData
from segbench.results.verdicts import FAIL, FIXED, INCONCLUSIVE, REGRESSION, counts


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    body = [line(headers), "| " + " | ".join("---" for _ in headers) + " |"]
    body += [line(row) for row in rows]
    return "\n".join(body)


# -- a run ------------------------------------------------------------------------------------------

RESULT_HEADERS = (
    "model", "backend", "device", "precision", "size", "batch", "p50 ms", "p90 ms", "p99 ms",
    "images/s", "vs PyTorch", "TFLOP/s", "of peak", "peak host MiB", "peak device MiB", "status",
)  # fmt: skip
CHECK_HEADERS = (
    "model", "backend", "device", "precision", "level", "metric", "value", "baseline", "delta",
    "interval", "band", "images", "verdict",
)  # fmt: skip


def result_rows(run: RunData, speedup: dict[int, float] | None = None) -> Rows:
    """Every cell, failed ones with their status and error in place of numbers (never as zeros).
    ``speedup`` maps a cell's row index to its speed-up over PyTorch fp32."""
    rows: Rows = []
    speedup = speedup or {}
    for index, cell in run.cells.iterrows():
        shown = view.cell_view(cell)
        ratio = speedup.get(index)
        reference = (
            cell["backend"] == "torch" and cell["precision"] == "fp32" and cell["backend_options"] == "{}"
        )
        if ratio is not None:
            versus = view.speedup(ratio)
        else:
            versus = "reference" if reference and shown.status == "ok" else view.MISSING
        rows.append(
            (
                [
                    shown.model,
                    shown.backend,
                    shown.device,
                    shown.precision,
                    shown.size,
                    shown.batch,
                    shown.p50,
                    shown.p90,
                    shown.p99,
                    shown.throughput,
                    versus,
                    shown.achieved,
                    shown.peak_fraction,
                    shown.peak_host,
                    shown.peak_device,
                    shown.status_text,
                ],
                shown.tone,
            )
        )
    return rows


def checks_note(run: RunData) -> str:
    """What the numerics table's columns mean."""
    levels = {float(c) for c in run.checks["confidence"].dropna()}
    level = f"{view.share(levels.pop())} " if len(levels) == 1 else ""
    words = view.VERDICT_WORDS
    return (
        "Task metrics in points. delta = backend - PyTorch baseline on the same images; interval = its "
        f"{level}confidence interval (paired bootstrap over the images); band = the deviation allowed. "
        f"{words['pass']}: the interval lies inside the band; {words['fail']}: it lies outside (a confident "
        f"shift); {words['inconclusive']}: too few images to tell. Tensor rows are the judged raw-output "
        "statistic and its bound."
    )


def check_rows(run: RunData) -> Rows:
    rows: Rows = []
    for _, check in run.checks.iterrows():
        shown = view.check_view(check)
        cells = [
            shown.model,
            shown.backend,
            shown.device,
            shown.precision,
            shown.level,
            shown.metric,
            shown.value,
            shown.baseline,
            shown.delta,
            shown.interval,
            shown.band,
            shown.images,
            shown.verdict_text,
        ]
        rows.append((cells, shown.tone))
    return rows


def run_summary(run: RunData) -> str:
    """``4 cells (1 failed), 3 numerics checks (1 failed, 1 inconclusive): FAILURES``."""
    cells, checks = run.cells, run.checks
    failed_cells = int((cells["status"] != "ok").sum())
    judged = checks[(checks["role"] == "candidate") & (checks["level"] != "diagnosis")]
    found = counts(judged.to_dict("records"))
    failed, inconclusive = found[FAIL], found[INCONCLUSIVE]
    verdict = "FAILURES" if failed_cells or failed else "INCONCLUSIVE" if inconclusive else "all passed"
    return (
        f"{len(cells)} cells ({failed_cells} failed), {len(judged)} numerics checks "
        f"({failed} failed, {inconclusive} inconclusive): {verdict}"
    )


def _run_facts(run: RunData) -> list[tuple[str, str]]:
    env = run.env
    stamps = sorted(t for t in run.cells["timestamp"].dropna())
    git = str(env.get("git_sha") or view.MISSING)[:12] + (
        " (uncommitted changes)" if env.get("git_dirty") else ""
    )
    return [
        ("run", str(run.path)),
        ("config", f"{env.get('config_name', view.MISSING)} (hash {env.get('config_hash', view.MISSING)})"),
        ("when", f"{stamps[0]} .. {stamps[-1]}" if stamps else view.MISSING),
        ("segbench revision", git),
        ("environment fingerprint", str(env.get("fingerprint") or view.MISSING)),
        ("measured peak (matmul, TFLOP/s)", peak_text(env)),
    ]


def peak_text(env: dict[str, Any]) -> str:
    """``cpu fp32 0.130``: the peaks a run measured (env.json ``peak_tflops``); ``-`` before them."""
    peaks = env.get("peak_tflops") or {}
    found = [
        f"{device} {precision} {view.tflops(value)}"
        for device, by_precision in peaks.items()
        for precision, value in by_precision.items()
    ]
    return ", ".join(found) or view.MISSING


LATENCY_NOTE = (
    "Latency is end to end: preprocess + inference + postprocess, per batch, in milliseconds over every "
    "timed iteration (none dropped). images/s = batch / mean latency. vs PyTorch = PyTorch fp32 p50 / this "
    "p50 on the same device, size and batch. TFLOP/s = the model's FLOPs x batch / the compute p50 (the "
    "device's compute stage where the backend times one, else the end-to-end p50); of peak = that over "
    "the matmul peak this run measured for the device and precision."
)


def report_markdown(run: RunData, plots: Sequence[Any], speedup: dict[int, float] | None = None) -> str:
    """report.md: summary, environment, every cell, every numerics verdict, links to the plots."""
    parts = [
        f"# segbench report: {run.env.get('config_name', run.path.name)}",
        "",
        f"**{run_summary(run)}**",
        "",
        markdown_table(("", ""), _run_facts(run)),
        "",
        "## Latency and throughput",
        "",
        LATENCY_NOTE,
        "",
        markdown_table(RESULT_HEADERS, [cells for cells, _ in result_rows(run, speedup)]),
        "",
    ]
    if len(run.checks):
        parts += [
            "## Numerics against the PyTorch fp32 baseline",
            "",
            checks_note(run),
            "",
            markdown_table(CHECK_HEADERS, [cells for cells, _ in check_rows(run)]),
            "",
        ]
    if plots:
        parts += ["## Plots", ""]
        parts += [f"![{plot.title}](plots/{plot.path.name})" for plot in plots]
        parts.append("")
    parts += [
        "<details><summary>Environment</summary>",
        "",
        markdown_table(("field", "value"), environment_rows(run.env)),
        "",
        "</details>",
        "",
    ]
    return "\n".join(parts)


def report_html(run: RunData, plots: Sequence[Any], speedup: dict[int, float] | None = None) -> str:
    """report.html: the same content as report.md, with the plots embedded (no external requests)."""
    title = f"segbench report: {run.env.get('config_name', run.path.name)}"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="summary">{html.escape(run_summary(run))}</p>',
        html_table(("", ""), [(list(fact), "") for fact in _run_facts(run)]),
        "<h2>Latency and throughput</h2>",
        f"<p>{html.escape(LATENCY_NOTE)}</p>",
        html_table(RESULT_HEADERS, result_rows(run, speedup), cell_filters(run.cells), "results"),
    ]
    if len(run.checks):
        body += [
            "<h2>Numerics against the PyTorch fp32 baseline</h2>",
            f"<p>{html.escape(checks_note(run))}</p>",
            html_table(CHECK_HEADERS, check_rows(run), check_filters(run.checks), "checks"),
        ]
    if plots:
        body.append("<h2>Plots</h2>")
        for plot in plots:
            data = base64.b64encode(plot.png).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(plot.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(plot.title)}</figcaption></figure>"
            )
    body += [
        "<h2>Environment</h2>",
        html_table(("field", "value"), [(list(row), "") for row in environment_rows(run.env)]),
    ]
    return page(title, body)


# -- a comparison -----------------------------------------------------------------------------------

CELL_CHANGE_HEADERS = (
    "cell", "baseline p50 ms", "current p50 ms", "p50 change", "throughput change", "p (slower)",
    "p (faster)", "samples", "memory", "verdict",
)  # fmt: skip
CHECK_CHANGE_HEADERS = (
    "check",
    "baseline",
    "current",
    "change",
    "interval",
    "allowed",
    "verdicts",
    "verdict",
)


def _memory_text(change: Any) -> str:
    parts = []
    for column, values in change.memory.items():
        name = "host" if column == "peak_host_mb" else "device"
        flag = " " + view.change_label(REGRESSION, True) if column in change.memory_regression else ""
        parts.append(
            f"{name} {view.memory(values['baseline'])}->{view.memory(values['current'])} {view.MEMORY_UNIT}"
            f" ({view.percent(values['change'])}){flag}"
        )
    return "; ".join(parts) or view.MISSING


def _noted(label: str, note: str) -> str:
    return f"{label}: {note}" if note else label


def cell_change_rows(changes: Sequence[Any]) -> Rows:
    rows: Rows = []
    for change in changes:
        verdict_regressed = change.verdict in (REGRESSION, NOW_FAILING)
        verdict = _noted(view.change_label(change.verdict, verdict_regressed), change.note)
        if change.memory_regression and not verdict_regressed:
            verdict = f"{view.change_label('memory regression', True)} ({verdict})"
        improved = change.verdict in (IMPROVEMENT, FIXED)
        rows.append(
            (
                [
                    change.label,
                    view.latency(change.baseline_p50_ms),
                    view.latency(change.current_p50_ms),
                    view.percent(change.p50_change),
                    view.percent(change.throughput_change),
                    view.p_value(change.p_slower),
                    view.p_value(change.p_faster),
                    f"{change.samples[0]}/{change.samples[1]}",
                    _memory_text(change),
                    verdict,
                ],
                view.change_tone(change.verdict, regressed=change.regressed, improved=improved),
            )
        )
    return rows


def check_change_rows(changes: Sequence[Any]) -> Rows:
    """One row per matched check: the values, the change and its interval, the fall the check allows,
    each run's verdict, and what compare makes of it."""
    rows: Rows = []
    for change in changes:
        level = change.check.get("level")
        before, after = (
            view.verdict_label(change.baseline_verdict),
            view.verdict_label(change.current_verdict),
        )
        improved = change.verdict == FIXED
        rows.append(
            (
                [
                    change.label,
                    view.check_value(change.baseline_value, level),
                    view.check_value(change.current_value, level),
                    view.check_change(change.change, level),
                    view.interval(change.change_low, change.change_high),
                    view.bound(view.AT_LEAST, "" if change.limit is None else view.band_edge(change.limit)),
                    f"{before} -> {after}",
                    _noted(view.change_label(change.verdict, change.regressed), change.note),
                ],
                view.change_tone(change.verdict, regressed=change.regressed, improved=improved),
            )
        )
    return rows


def regression_count(comparison: VerdictTally) -> str:
    """``2 performance and 0 accuracy regression(s)``, or ``no regressions``."""
    performance, accuracy = len(comparison.regressions), len(comparison.accuracy_regressions)
    if performance or accuracy:
        return f"{performance} performance and {accuracy} accuracy regression(s)"
    return "no regressions"


def comparison_headline(comparison: Comparison) -> str:
    settings = comparison.settings
    verdict = regression_count(comparison)
    inconclusive = len(comparison.inconclusive_checks)
    checks = f", {inconclusive} numerics check(s) inconclusive" if inconclusive else ""
    return (
        f"{verdict}; {len(comparison.improvements)} improvement(s){checks}, {len(comparison.cells)} "
        f"matched cells (a regression: p50 slower by more than {view.share(settings.threshold)} and "
        f"significant at {view.p_value(settings.alpha)}, one-sided Mann-Whitney U on the raw samples, "
        f"Benjamini-Hochberg adjusted){machine_line(comparison)}"
    )


def machine_line(comparison: Comparison) -> str:
    """Why cells got no performance verdict, in one sentence (empty when every cell got one)."""
    undecided = comparison.undecided
    if comparison.machine_changes and not comparison.settings.allow_machine_change and undecided:
        changes = "; ".join(comparison.machine_changes)
        return (f". NO LATENCY VERDICT: the runs ran on other hardware ({changes}); accuracy is still "
                "compared, and --allow-machine-change judges the latencies anyway")  # fmt: skip
    disturbed = [c for c in undecided if c.verdict == DISTURBED]
    if disturbed:
        worst = max(disturbed, key=lambda c: abs(c.sentinel_change or 0.0))
        return (f". {len(disturbed)} cell(s) DISTURBED, no verdict: the noise sentinel moved past "
                f"{view.share(comparison.settings.sentinel_bound)} between their passes (most: "
                f"{view.percent(worst.sentinel_change)}, {worst.label})")  # fmt: skip
    return f". {comparison.sentinel_note}" if comparison.sentinel_note else ""


def _noteworthy(comparison: Comparison) -> list[Any]:
    return [c for c in comparison.cells if c.regressed or c.verdict in (IMPROVEMENT, FIXED)]


def comparison_markdown(comparison: Comparison) -> str:
    """The comparison for a CI job summary or PR comment: environment differences first."""
    parts = [
        "# segbench compare",
        "",
        f"`{comparison.baseline}` (baseline) vs `{comparison.current}` (current)",
        "",
        f"**{comparison_headline(comparison)}**",
        "",
    ]
    if comparison.env_differences:
        parts += [
            "## Environment differences",
            "",
            "The two runs differ in these; performance changes may come from them.",
            "",
            markdown_table(
                ("field", "baseline", "current"),
                [[d["field"], str(d["baseline"]), str(d["current"])] for d in comparison.env_differences],
            ),
            "",
        ]
    else:
        parts += ["Same environment (machine, versions, revision and config).", ""]
    for title, headers, rows in (
        ("Regressions and improvements", CELL_CHANGE_HEADERS, cell_change_rows(_noteworthy(comparison))),
        ("Accuracy regressions", CHECK_CHANGE_HEADERS, check_change_rows(comparison.accuracy_regressions)),
        ("Inconclusive checks", CHECK_CHANGE_HEADERS, check_change_rows(comparison.inconclusive_checks)),
    ):
        if rows:
            parts += [f"## {title}", "", markdown_table(headers, [cells for cells, _ in rows]), ""]
    for title, names in (
        ("New cells", comparison.new_cells),
        ("Missing cells", comparison.missing_cells),
        ("New checks", comparison.new_checks),
        ("Missing checks", comparison.missing_checks),
    ):
        if names:
            parts += [f"## {title}", "", *(f"- {name}" for name in names), ""]
    parts += [
        "<details><summary>Every matched cell</summary>",
        "",
        markdown_table(CELL_CHANGE_HEADERS, [c for c, _ in cell_change_rows(comparison.cells)]),
        "",
        "</details>",
        "",
    ]
    if comparison.checks:
        parts += [
            "<details><summary>Every matched numerics check</summary>",
            "",
            markdown_table(CHECK_CHANGE_HEADERS, [c for c, _ in check_change_rows(comparison.checks)]),
            "",
            "</details>",
            "",
        ]
    return "\n".join(parts)


# Verdicts a terminal reader should notice; the rest is summarised by the headline.
TERMINAL_VERDICTS = frozenset(
    {REGRESSION, NOW_FAILING, IMPROVEMENT, FIXED, WITHIN_NOISE, INCONCLUSIVE, DISTURBED, MACHINE_CHANGED}
)
