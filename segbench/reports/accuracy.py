"""The accuracy half of ``segbench compare``: two runs' numerics checks, matched and judged.

Checks match on model, backend (and its options), device, precision, level and metric. Each run's checks
are equivalence tests against that run's own PyTorch baseline, with three verdicts: pass, fail (a
confident shift out of the band) and inconclusive (too few images to tell). A check regresses when

- it passed (or was inconclusive) in the baseline run and fails now, or
- it fell by more than the check allows (the lower edge of its band: ``-tolerance``, or the relative
  floor where that binds; points). A backend's row is judged on its *deviation from its own run's PyTorch
  baseline* (``delta``), which is what its verdict is about and stays comparable when the two runs
  evaluated different numbers of images (segbench grows the set while a verdict is inconclusive, so two
  runs of one config may stop at different sizes; AP on 128 images is not AP on 32). A PyTorch baseline
  row is judged on its value, when both runs evaluated the same images. Where both runs carry confidence
  intervals, only a fall whose whole interval lies past that edge counts; one whose interval reaches back
  into the band is reported as inconclusive.

A metric that rose, or moved inside the band, never regresses. A check that is inconclusive now is
reported as inconclusive: not a regression, and not silently ok either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from segbench.reports import view
from segbench.reports.rundata import CHECK_KEY
from segbench.results.verdicts import (
    FAIL,
    FIXED,
    INCONCLUSIVE,
    PASS,
    REGRESSION,
    STILL_FAILING,
    UNCHANGED,
    number,
    verdict_of,
)


@dataclass
class CheckChange:
    """One numerics check present in both runs (diagnosis rows are left out: they carry no verdict).

    ``verdict`` is REGRESSION, INCONCLUSIVE, STILL_FAILING, FIXED or UNCHANGED; ``change`` what the
    check moved by (points): a backend's deviation from its run's PyTorch baseline now minus then, or a
    baseline row's value (None where the runs evaluated different images); ``change_low``/``change_high``
    its interval where both runs carry one; ``limit`` the fall the check allows (the lower edge of its
    band, negative)."""

    check: dict[str, Any]
    label: str
    baseline_value: float | None
    current_value: float | None
    change: float | None
    tolerance: float | None
    baseline_passed: bool | None
    current_passed: bool | None
    regressed: bool
    note: str = ""
    verdict: str = UNCHANGED
    baseline_verdict: str | None = None
    current_verdict: str | None = None
    change_low: float | None = None
    change_high: float | None = None
    limit: float | None = None


def check_label(row: pd.Series) -> str:
    return view.check_label(row)


def _passed(value: Any) -> bool | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else bool(value)


def judging_tolerance(row: pd.Series, checks: pd.DataFrame) -> float | None:
    """The tolerance a check is judged with. A PyTorch baseline row has none of its own (it is the
    reference): it takes the tightest tolerance its run applies to that model's metric."""
    if row["role"] != "baseline":
        return number(row["tolerance"])
    peers = checks[
        (checks["model"] == row["model"])
        & (checks["metric"] == row["metric"])
        & (checks["role"] == "candidate")
        & checks["tolerance"].notna()
    ]
    return float(peers["tolerance"].min()) if len(peers) else None


def _row_verdict(row: pd.Series) -> str | None:
    return PASS if row["role"] == "baseline" else verdict_of(row.to_dict())


def _extents(row: pd.Series) -> tuple[float, float] | None:
    """How far a row's interval reaches below and above its deviation (points); None without one."""
    low, high, delta = number(row["ci_low"]), number(row["ci_high"]), number(row["delta"])
    if low is None or high is None or delta is None:
        return None
    return max(delta - low, 0.0), max(high - delta, 0.0)


def change_interval(before: pd.Series, after: pd.Series, change: float) -> tuple[float | None, float | None]:
    """The interval of ``after - before``: each run's reach around its deviation, combined as
    independent errors (root sum of squares); (None, None) unless both rows carry an interval."""
    old, new = _extents(before), _extents(after)
    if old is None or new is None:
        return None, None
    return change - math.hypot(new[0], old[1]), change + math.hypot(new[1], old[0])


def allowed_fall(row: pd.Series, tolerance: float | None) -> float | None:
    """The fall a task check allows (negative points): the lower edge of its band, else -tolerance."""
    if row["level"] != "task":
        return None
    band_low = number(row["band_low"]) if row["role"] != "baseline" else None
    if band_low is not None:
        return band_low
    return None if tolerance is None else -tolerance


def _verdict_and_note(
    before: str | None,
    after: str | None,
    change: float | None,
    interval: tuple,
    limit: float | None,
    row: pd.Series,
) -> tuple[str, str]:
    low, high = interval
    # The points it fell by, when it fell past the limit the check allows.
    fell_by = -change if change is not None and limit is not None and limit < 0 and change < limit else None
    shown = view.interval(low, high)
    around = f" (interval {shown})" if shown else ""
    past = "" if limit is None else view.band_edge(limit)
    if after == FAIL and before in (PASS, INCONCLUSIVE):
        note = f"{'passed' if before == PASS else 'was inconclusive'} in the baseline run, fails now"
        if change is not None and change > 0:
            rose = view.delta(change, signed=False)
            note += f" (the metric rose {rose} points: a confident shift up fails the check too)"
        return REGRESSION, note
    what = "its deviation from PyTorch fell" if row["role"] != "baseline" else "fell"
    if fell_by is not None and (high is None or high < limit):
        fall = view.delta(fell_by, signed=False)
        return REGRESSION, f"{what} {fall} points against the baseline run{around}, past {past}"
    if after == INCONCLUSIVE:
        needed = number(row["images_needed"])
        more = f" ({view.needed(needed)})" if needed is not None else ""
        return INCONCLUSIVE, f"too few images to tell against PyTorch in this run{more}"
    if fell_by is not None:
        fall = view.delta(fell_by, signed=False)
        return INCONCLUSIVE, f"{what} {fall} points{around}, past {past}, but not surely"
    if after == FAIL:
        return STILL_FAILING, "failed in the baseline run too"
    if before == FAIL and after == PASS:
        return FIXED, "failed in the baseline run, passes now"
    return UNCHANGED, ""


def _change(before: pd.Series, after: pd.Series) -> tuple[float | None, str]:
    """What a check moved by between the runs (points), and why it is not compared when it is not: a
    backend's deviation from PyTorch, or a baseline row's value on the same images."""
    key = "delta" if after["role"] != "baseline" and after["level"] == "task" else "value"
    old, new = number(before[key]), number(after[key])
    if old is None or new is None:
        return None, ""
    images = number(before["images"]), number(after["images"])
    if key == "value" and after["level"] == "task" and None not in images and images[0] != images[1]:
        counted = f"{view.count(images[0])} and {view.count(images[1])}"
        return None, f"evaluated on {counted} images: values not compared"
    return new - old, ""


def judge_check(before: pd.Series, after: pd.Series, current: pd.DataFrame) -> CheckChange:
    """One matched check: its change between the runs and what it amounts to."""
    value_before, value_after = number(before["value"]), number(after["value"])
    change, skipped = _change(before, after)
    tolerance = judging_tolerance(after, current) if after["level"] == "task" else None
    limit = allowed_fall(after, tolerance)
    verdict_before, verdict_after = _row_verdict(before), _row_verdict(after)
    interval = (None, None) if change is None else change_interval(before, after, change)
    verdict, note = _verdict_and_note(verdict_before, verdict_after, change, interval, limit, after)
    note = note or skipped
    return CheckChange(
        check={key: after[key] for key in CHECK_KEY},
        label=check_label(after),
        baseline_value=value_before,
        current_value=value_after,
        change=change,
        tolerance=tolerance,
        baseline_passed=_passed(before["passed"]),
        current_passed=_passed(after["passed"]),
        regressed=verdict == REGRESSION,
        note=note,
        verdict=verdict,
        baseline_verdict=verdict_before,
        current_verdict=verdict_after,
        change_low=interval[0],
        change_high=interval[1],
        limit=limit,
    )


def compare_checks(
    baseline: pd.DataFrame, current: pd.DataFrame
) -> tuple[list[CheckChange], list[str], list[str]]:
    """(changes of the checks in both runs, labels of new checks, labels of missing ones)."""

    def judged(frame: pd.DataFrame) -> dict[tuple, pd.Series]:
        rows = frame[frame["level"] != "diagnosis"]
        return {tuple(row[c] for c in CHECK_KEY): row for _, row in rows.iterrows()}

    old, new = judged(baseline), judged(current)
    missing = [check_label(old[k]) for k in old if k not in new]
    added = [check_label(new[k]) for k in new if k not in old]
    changes = [judge_check(before, new[key], current) for key, before in old.items() if key in new]
    return changes, added, missing
