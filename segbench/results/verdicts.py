"""A numerics row's verdict, interval and band, read the same way from new rows and from old ones.

New rows (task level) carry ``verdict`` ("pass" | "fail" | "inconclusive"), the interval of the deviation
``ci_low``/``ci_high``, the allowed band ``band_low``/``band_high``, ``images``, ``images_needed`` and
``changed``. Rows written before the three-valued verdict carry ``passed`` and a ``paired`` dict
(``ci_low``, ``ci_high``, ``images``, ``changed``) instead: their verdict is derived from ``passed``
(True -> pass, False -> fail), their interval taken from ``paired`` and their band rebuilt from the
tolerance and the relative floor. Every reader (terminal tables, reports, plots, compare) goes through
here, so an old committed run and a new one are shown and judged alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
VERDICTS = (PASS, FAIL, INCONCLUSIVE)
# What ``segbench compare`` says of a cell or a check present in both runs (INCONCLUSIVE too).
REGRESSION = "regression"
FIXED = "fixed"
UNCHANGED = "unchanged"
STILL_FAILING = "still failing"


def missing(value: Any) -> bool:
    """None, NaN (a missing value in a pandas frame) or the empty string."""
    if isinstance(value, str):
        return not value
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: Any) -> float | None:
    if missing(value):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(result) else result


def _paired(row: Mapping[str, Any]) -> Mapping[str, Any]:
    paired = row.get("paired")
    return paired if isinstance(paired, Mapping) else {}


def verdict_of(row: Mapping[str, Any]) -> str | None:
    """``pass``, ``fail`` or ``inconclusive``; None for a row that judges nothing (a diagnosis, or an old
    row with ``passed`` null). A baseline row is the reference: it passes."""
    if row.get("level") == "diagnosis":
        return None
    verdict = row.get("verdict")
    if not missing(verdict) and verdict in VERDICTS:
        return str(verdict)
    passed = row.get("passed")
    if missing(passed):
        return None
    return PASS if bool(passed) else FAIL


def interval_of(row: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The interval of the deviation ``delta`` (points): ``ci_low``/``ci_high``, else an old row's
    ``paired`` interval."""
    low, high = number(row.get("ci_low")), number(row.get("ci_high"))
    if low is None and high is None:
        paired = _paired(row)
        low, high = number(paired.get("ci_low")), number(paired.get("ci_high"))
    return low, high


def band_of(row: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The allowed deviation in points: ``band_low``/``band_high``, else (a task-level candidate row
    written before bands) ``[max(-tolerance, -(1 - floor) x baseline), +tolerance]``."""
    low, high = number(row.get("band_low")), number(row.get("band_high"))
    if low is not None or high is not None:
        return low, high
    if row.get("role") == "baseline" or row.get("level", "task") != "task":
        return None, None
    tolerance = number(row.get("tolerance"))
    if tolerance is None:
        return None, None
    low = -tolerance
    floor, baseline = number(row.get("relative_floor")), number(row.get("baseline"))
    if floor is not None and baseline is not None and floor > 0:
        low = max(low, -(1 - floor) * baseline)
    return low, tolerance


def images_of(row: Mapping[str, Any]) -> tuple[int | None, int | None, int | None]:
    """``(images, images_needed, changed)``, from the row or an old row's ``paired`` dict."""
    paired = _paired(row)

    def count(key: str) -> int | None:
        value = number(row.get(key))
        if value is None:
            value = number(paired.get(key))
        return None if value is None else int(value)

    return count("images"), count("images_needed"), count("changed")


def counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many candidate checks (diagnosis rows left out) pass, fail and are inconclusive."""
    found = dict.fromkeys(VERDICTS, 0)
    for row in rows:
        if row.get("role") != "candidate":
            continue
        verdict = verdict_of(row)
        if verdict is not None:
            found[verdict] += 1
    return found
