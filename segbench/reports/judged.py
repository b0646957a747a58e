"""What a judged cell is, and what a comparison's verdicts add up to: shared by ``compare`` (two runs)
and ``ab`` (two sides of one machine)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from segbench.reports.accuracy import CheckChange
from segbench.results.verdicts import FIXED, REGRESSION

# Verdicts of a matched cell: REGRESSION, NOW_FAILING, IMPROVEMENT, FIXED, WITHIN_NOISE (past the
# threshold but not significant), INCONCLUSIVE (past the threshold, too few samples to test), UNCHANGED,
# STILL_FAILING. Only the first two (and accuracy regressions) make compare exit 1.
NOW_FAILING = "now failing"
IMPROVEMENT = "improvement"
WITHIN_NOISE = "within noise"
REGRESSING = frozenset({REGRESSION, NOW_FAILING})
# No performance verdict: the sentinel says the machine ran at another speed around one of the two
# measurements (DISTURBED), or the two runs ran on other hardware (MACHINE_CHANGED). compare exits 3.
DISTURBED = "disturbed"
MACHINE_CHANGED = "machine changed"
UNDECIDED = frozenset({DISTURBED, MACHINE_CHANGED})


@dataclass(kw_only=True)
class JudgedCell:
    """What every judged cell carries, compare's and ab's: its verdict, its memory change and a note."""

    cell: dict[str, Any]
    label: str
    verdict: str
    memory: dict[str, dict[str, float | None]] = field(default_factory=dict)
    memory_regression: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def regressed(self) -> bool:
        return self.verdict in REGRESSING or bool(self.memory_regression)


class VerdictTally:
    """What a comparison's judged ``cells`` and ``checks`` add up to, and its exit code (compare's and
    ab's comparisons alike)."""

    cells: list[Any]
    checks: list[CheckChange]

    @property
    def undecided(self) -> list[Any]:
        """Cells given no performance verdict: disturbed, or measured on other hardware."""
        return [c for c in self.cells if c.verdict in UNDECIDED]

    @property
    def regressions(self) -> list[Any]:
        return [c for c in self.cells if c.regressed]

    @property
    def accuracy_regressions(self) -> list[CheckChange]:
        return [c for c in self.checks if c.regressed]

    @property
    def improvements(self) -> list[Any]:
        return [c for c in self.cells if c.verdict in (IMPROVEMENT, FIXED)]

    @property
    def exit_code(self) -> int:
        """1 on a regression; else 3 when a cell got no performance verdict (disturbed, machine changed);
        else 0."""
        if self.regressions or self.accuracy_regressions:
            return 1
        return 3 if self.undecided else 0
