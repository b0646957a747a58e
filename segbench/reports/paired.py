"""The statistics of ``segbench ab``: two sides measured on one machine, pass by pass, interleaved.

The base and head sides time the same cells in passes run in a balanced order (A B, B A, A B, ...:
:func:`abba_order`), so pass ``k`` of the two sides was measured minutes apart at most, and a slow drift
of the machine adds to A first in one pair and to B first in the next. Each cell is then judged on its
*pairs*: the head's fastest iteration over the base's in pass ``k`` (a log-ratio per pair), never on
pooled samples. The fastest iteration, because noise only ever adds time: on the 2-core CI VM the
pair-to-pair spread of the ratio of minima was about half that of the ratio of p50s (A/A, 5 pairs:
2-5% against 3-16%; ``reports/ab/``), and a code change that slows the bulk of the iterations slows the
fastest one too. The p50s are shown beside it.

- **Estimate.** The geometric mean of the per-pair ratios, with a Student-t interval over the pairs
  (scipy). Samples inside a pass are not independent (a pass shares its process state and its moment of
  the machine), so the pair, not the sample, is the unit of replication.
- **Verdict.** A regression is a change past ``threshold`` that is significant: the one-sided t-test on
  the log-ratios, its p-values Benjamini-Hochberg adjusted across the cells, below ``alpha``. Past the
  threshold but not significant is ``within noise``.
- **Disturbed pairs.** ``ab``'s driver reads the noise sentinel before and after every side's pass; a
  pass's level is the median of the two readings that bracket it. A pair whose two passes' levels differ
  from each other, or from the A/B's typical level, by more than the sentinel bound saw the machine change
  under it, and is left out. A load that lasts the whole A/B slows both sides alike and leaves the pairs
  in. A cell left with
  fewer than :data:`MIN_PAIRS` clean pairs is ``disturbed``: no performance verdict (exit 3).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from segbench.reports import view
from segbench.reports.accuracy import CheckChange, compare_checks
from segbench.reports.compare import (
    DISTURBED,
    IMPROVEMENT,
    NOW_FAILING,
    WITHIN_NOISE,
    CompareSettings,
    JudgedCell,
    VerdictTally,
    bh_adjust,
    cell_labels,
    memory_changes,
)
from segbench.reports.noise import spread
from segbench.reports.rundata import CELL_KEY, RunData, cells_frame
from segbench.results.records import SentinelReading
from segbench.results.verdicts import FIXED, INCONCLUSIVE, REGRESSION, STILL_FAILING, UNCHANGED

BASE, HEAD = "base", "head"
MIN_PAIRS = 3  # a t-interval over fewer pairs says nothing a CI gate can act on
CONFIDENCE = 0.95  # the interval shown; the verdict uses the adjusted p-value and alpha


def abba_order(passes: int) -> list[tuple[str, int]]:
    """The order the sides' passes run in: ``(side, pass)``, pairs alternating which side goes first
    (base, head; head, base; base, head; ...), so drift and bursts land on both sides alike."""
    order = []
    for k in range(passes):
        first, second = (BASE, HEAD) if k % 2 == 0 else (HEAD, BASE)
        order += [(first, k), (second, k)]
    return order


@dataclass(frozen=True)
class SidePass:
    """When one side's pass ran (seconds since the epoch), as the driver saw it."""

    side: str
    repeat: int
    start: float
    end: float


@dataclass(frozen=True)
class PairedEstimate:
    """Head over base from ``n`` per-pair log-ratios: the ratio, its interval, one-sided p-values."""

    n: int
    ratio: float
    low: float
    high: float
    p_slower: float
    p_faster: float

    @classmethod
    def of(cls, log_ratios: Sequence[float]) -> PairedEstimate:
        values = np.asarray(log_ratios, dtype=float)
        n, mean = len(values), float(values.mean())
        if n < 2:
            raise ValueError("a paired estimate needs at least two pairs")
        sd = float(values.std(ddof=1))
        if sd == 0.0:  # identical ratios (ties): the interval is a point, the test is decided by the sign
            slower, faster = (0.0, 1.0) if mean > 0 else (1.0, 0.0) if mean < 0 else (1.0, 1.0)
            return cls(n, math.exp(mean), math.exp(mean), math.exp(mean), slower, faster)
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)
        slower = float(stats.ttest_1samp(values, 0.0, alternative="greater").pvalue)
        faster = float(stats.ttest_1samp(values, 0.0, alternative="less").pvalue)
        return cls(n, math.exp(mean), math.exp(mean - half), math.exp(mean + half), slower, faster)


@dataclass(kw_only=True)
class PairedCell(JudgedCell):
    """One cell of the A/B: the per-pair ratios, the estimate and the verdict."""

    base_p50_ms: float | None = None  # the median of the side's per-pass p50s over the clean pairs
    head_p50_ms: float | None = None
    change: float | None = None  # estimated head / base - 1, of the passes' fastest iterations
    interval: tuple[float, float] | None = None  # its CONFIDENCE interval, as changes
    p_slower: float | None = None  # BH-adjusted one-sided p-values
    p_faster: float | None = None
    # head / base of the fastest iterations, per pair (None: left out as disturbed)
    pair_ratios: list[float | None] = field(default_factory=list)
    disturbed_pairs: list[int] = field(default_factory=list)


@dataclass
class ABComparison(VerdictTally):
    base: str
    head: str
    settings: CompareSettings
    passes: int
    pair_levels: list[dict[str, Any]]  # per pair: each side's sentinel level (ms) and the move between
    cells: list[PairedCell]
    new_cells: list[str]
    missing_cells: list[str]
    checks: list[CheckChange]
    sides: dict[str, Any] = field(default_factory=dict)  # what each side ran (ref, sha, python)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = {
            "regressions": len(self.regressions),
            "accuracy_regressions": len(self.accuracy_regressions),
            "improvements": len(self.improvements),
            "disturbed": len(self.undecided),
            "matched_cells": len(self.cells),
            "exit_code": self.exit_code,
        }
        return data


def side_levels(
    schedule: Sequence[SidePass], readings: Sequence[SentinelReading], device: str
) -> dict[tuple[str, int], float]:
    """Each side-pass's sentinel level on ``device`` (its CPU readings where it has none): the median of
    the last reading before it started and the first after it ended."""
    stream = sorted((r for r in readings if r.device == device), key=lambda r: r.time)
    if not stream and device != "cpu":
        return side_levels(schedule, readings, "cpu")
    levels = {}
    for run in schedule:
        before = [r.median_ms for r in stream if r.time <= run.start][-1:]
        after = [r.median_ms for r in stream if r.time >= run.end][:1]
        if before or after:
            levels[run.side, run.repeat] = statistics.median(before + after)
    return levels


def _per_pass(run: RunData) -> dict[tuple, dict[int, Any]]:
    """A side's cells per pass: ``{cell key: {pass: row}}``, each row one pass's statistics."""
    by_pass: dict[int, list[dict[str, Any]]] = {}
    for row in run.results:
        by_pass.setdefault(int(row.get("repeat") or 0), []).append(row)
    found: dict[tuple, dict[int, Any]] = {}
    for repeat, rows in by_pass.items():
        for _, row in cells_frame(rows).iterrows():
            found.setdefault(tuple(row[c] for c in CELL_KEY), {})[repeat] = row
    return found


def _pair_disturbed(levels: dict[tuple[str, int], float], repeat: int, bound: float) -> float | None:
    """How far pair ``repeat``'s two side levels are from each other and from the A/B's typical level (the
    median of every side-pass's), when past ``bound``; else None. A reading between two passes brackets
    both, so a burst it caught cannot be pinned on one of them: both pairs it touches are left out."""
    base_level, head_level = levels.get((BASE, repeat)), levels.get((HEAD, repeat))
    if base_level is None or head_level is None or not levels:
        return None
    moved = spread([base_level, head_level, statistics.median(levels.values())])
    return moved if moved > bound else None


def compare_sides(
    base: RunData,
    head: RunData,
    schedule: Sequence[SidePass],
    readings: Sequence[SentinelReading],
    settings: CompareSettings,
) -> ABComparison:
    """Judge every cell the two sides share on its clean pairs (see the module docstring)."""
    old, new = _per_pass(base), _per_pass(head)
    labels = cell_labels(pd.concat([base.cells, head.cells], ignore_index=True))
    pooled = [
        {tuple(row[c] for c in CELL_KEY): row for _, row in run.cells.iterrows()} for run in (base, head)
    ]
    passes = max((run.repeat + 1 for run in schedule), default=0)
    cells, tested, raw = [], [], []
    for key in old:
        if key not in new:
            continue
        cell = dict(zip(CELL_KEY, (v.item() if hasattr(v, "item") else v for v in key), strict=True))
        levels = side_levels(schedule, readings, str(cell["device"]))
        change = _judge_cell(key, labels[key], cell, old[key], new[key], levels, settings)
        if change.verdict not in (NOW_FAILING, FIXED, STILL_FAILING):
            change.memory, change.memory_regression = memory_changes(pooled[0][key], pooled[1][key], settings)
        cells.append(change)
        ratios = [math.log(r) for r in change.pair_ratios if r is not None]
        if change.verdict == UNCHANGED and len(ratios) >= MIN_PAIRS:
            tested.append(change)
            raw.append(PairedEstimate.of(ratios))
    _judge(tested, raw, settings)
    cpu_levels = side_levels(schedule, readings, "cpu")
    pair_levels = [
        {"pass": k + 1, "base_ms": cpu_levels.get((BASE, k)), "head_ms": cpu_levels.get((HEAD, k)),
         "move": spread([v for v in (cpu_levels.get((BASE, k)), cpu_levels.get((HEAD, k))) if v])}
        for k in range(passes)
    ]  # fmt: skip
    checks, _, _ = compare_checks(base.checks, head.checks)
    return ABComparison(
        base=str(base.path),
        head=str(head.path),
        settings=settings,
        passes=passes,
        pair_levels=pair_levels,
        cells=cells,
        new_cells=[labels[k] for k in new if k not in old],
        missing_cells=[labels[k] for k in old if k not in new],
        checks=checks,
    )


def _judge_cell(
    key: tuple,
    label: str,
    cell: dict[str, Any],
    before: dict[int, Any],
    after: dict[int, Any],
    levels: dict[tuple[str, int], float],
    settings: CompareSettings,
) -> PairedCell:
    """A cell's pairs: failures first (a pass that failed on a side fails the side), then the clean
    pairs' ratios; the verdict is UNCHANGED until :func:`_judge` tests it with the other cells."""
    change = PairedCell(cell=cell, label=label, verdict=UNCHANGED)
    ok_before = all(row["status"] == "ok" for row in before.values())
    ok_after = all(row["status"] == "ok" for row in after.values())
    if not (ok_before and ok_after):
        change.verdict = {(True, False): NOW_FAILING, (False, True): FIXED, (False, False): STILL_FAILING}[
            (ok_before, ok_after)
        ]
        failed = next((row for row in after.values() if row["status"] != "ok"), None)
        change.note = str(failed["error"] or "") if failed is not None else ""
        return change
    pairs = sorted(set(before) & set(after))
    clean = []
    for k in pairs:
        moved = _pair_disturbed(levels, k, settings.sentinel_bound)
        if moved is not None:
            change.disturbed_pairs.append(k)
        clean.append(moved is None)
    change.pair_ratios = [
        _fastest(after[k]) / _fastest(before[k]) if use else None for k, use in zip(pairs, clean, strict=True)
    ]
    used = [k for k, use in zip(pairs, clean, strict=True) if use]
    if used:
        change.base_p50_ms = float(np.median([before[k]["p50_ms"] for k in used]))
        change.head_p50_ms = float(np.median([after[k]["p50_ms"] for k in used]))
    if len(used) < MIN_PAIRS:
        bound = view.share(settings.sentinel_bound)
        if change.disturbed_pairs:
            change.verdict = DISTURBED
            change.note = (f"{len(change.disturbed_pairs)} of {len(pairs)} pairs saw the noise sentinel move "
                           f"past {bound}; {len(used)} clean, a verdict needs {MIN_PAIRS}")  # fmt: skip
        else:
            change.verdict = INCONCLUSIVE
            change.note = f"{len(used)} pairs; a verdict needs {MIN_PAIRS}"
    return change


def _fastest(row: Any) -> float:
    """A pass's fastest iteration (its p50 for a row without samples)."""
    samples = list(row["samples_ms"])
    return float(min(samples)) if samples else float(row["p50_ms"])


def _judge(tested: list[PairedCell], estimates: list[PairedEstimate], settings: CompareSettings) -> None:
    slower = bh_adjust([e.p_slower for e in estimates])
    faster = bh_adjust([e.p_faster for e in estimates])
    for change, estimate, p_slower, p_faster in zip(tested, estimates, slower, faster, strict=True):
        change.change = estimate.ratio - 1
        change.interval = (estimate.low - 1, estimate.high - 1)
        change.p_slower, change.p_faster = p_slower, p_faster
        if abs(change.change) <= settings.threshold:
            continue
        p_value = p_slower if change.change > 0 else p_faster
        if p_value is not None and p_value < settings.alpha:
            change.verdict = REGRESSION if change.change > 0 else IMPROVEMENT
        else:
            change.verdict = WITHIN_NOISE
            change.note = f"past the threshold, not significant over {estimate.n} pairs"
