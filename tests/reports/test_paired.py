"""segbench ab's statistics on constructed passes: a quiet pair, a shifted pair, a pair with one side
disturbed, and a drift that interleaving cancels (where the unpaired comparison is fooled)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from segbench.reports.compare import (
    DISTURBED,
    IMPROVEMENT,
    REGRESSION,
    UNCHANGED,
    CompareSettings,
    compare_runs,
)
from segbench.reports.paired import BASE, HEAD, PairedEstimate, SidePass, abba_order, compare_sides
from segbench.reports.paired_report import ab_headline, ab_markdown
from segbench.reports.rundata import RunData
from segbench.results.records import SentinelReading
from tests.fakes.runs import ENV, cell, noisy

CELLS = (("unet", "torch", 1, 20.0), ("unet", "onnxruntime", 4, 48.0), ("fcn8s", "torch", 1, 14.0))
SLOT_S = 10.0  # each side-pass takes this long in the constructed schedule
SETTINGS = CompareSettings(threshold=0.05, alpha=0.01, sentinel_bound=0.25)


def schedule(passes: int, order: list[tuple[str, int]] | None = None) -> list[SidePass]:
    return [SidePass(side, k, i * SLOT_S, (i + 1) * SLOT_S - 1) for i, (side, k) in
            enumerate(order or abba_order(passes))]  # fmt: skip


def readings(plan: list[SidePass], level=lambda t: 10.0) -> list[SentinelReading]:
    """A sentinel reading before the first pass and after every pass, at ``level(time)`` ms."""
    times = [plan[0].start - 0.5, *(p.end + 0.5 for p in plan)]
    return [SentinelReading("cpu", "fp32 matmul", f"r{i}", t, [level(t)] * 5) for i, t in enumerate(times)]


def sides(plan: list[SidePass], speed=lambda side, k, t: 1.0) -> tuple[RunData, RunData]:
    """The two sides' runs: every cell once per pass, its samples ``speed(side, pass, time)`` times its
    base latency, with 3% noise; the pass-to-pass noise of a real machine (2%) on top."""
    rows: dict[str, list[dict]] = {BASE: [], HEAD: []}
    rng = np.random.default_rng(7)
    for run in plan:
        for index, (model, backend, batch, median) in enumerate(CELLS):
            factor = speed(run.side, run.repeat, run.start) * (1 + 0.02 * rng.standard_normal())
            seed = (run.side == HEAD) * 1000 + run.repeat * 10 + index
            samples = noisy(median * factor, n=20, seed=seed)
            rows[run.side].append(cell(model, backend, batch, samples=samples, repeat=run.repeat))
    return RunData(Path("base"), dict(ENV), rows[BASE]), RunData(Path("head"), dict(ENV), rows[HEAD])


def verdicts(comparison) -> dict[str, str]:
    return {c.label: c.verdict for c in comparison.cells}


def test_abba_order_alternates_which_side_goes_first():
    assert abba_order(4) == [(BASE, 0), (HEAD, 0), (HEAD, 1), (BASE, 1), (BASE, 2), (HEAD, 2), (HEAD, 3),
                             (BASE, 3)]  # fmt: skip


def test_estimate_is_the_geometric_mean_with_a_t_interval():
    ratios = [1.10, 1.12, 1.08, 1.11, 1.09]
    estimate = PairedEstimate.of([math.log(r) for r in ratios])
    assert estimate.ratio == pytest.approx(math.exp(np.mean(np.log(ratios))))
    assert estimate.low < estimate.ratio < estimate.high
    assert estimate.low > 1.0 and estimate.high < 1.2
    assert estimate.p_slower < 0.001 < 0.999 < estimate.p_faster
    tied = PairedEstimate.of([0.0, 0.0, 0.0])  # identical pairs: no spread, no evidence either way
    assert (tied.ratio, tied.p_slower, tied.p_faster) == (1.0, 1.0, 1.0)


def test_quiet_pair_is_unchanged():
    plan = schedule(5)
    comparison = compare_sides(*sides(plan), plan, readings(plan), SETTINGS)
    assert set(verdicts(comparison).values()) == {UNCHANGED}
    for change in comparison.cells:
        low, high = change.interval
        assert low < 0 < high  # the interval covers no change
        assert len(change.pair_ratios) == 5 and None not in change.pair_ratios
    assert comparison.exit_code == 0
    assert ab_headline(comparison).startswith("no regressions")


def test_shifted_pair_is_a_regression_and_a_faster_one_an_improvement():
    plan = schedule(5)

    def speed(side, k, t):
        return 1.3 if side == HEAD else 1.0

    comparison = compare_sides(*sides(plan, speed), plan, readings(plan), SETTINGS)
    assert set(verdicts(comparison).values()) == {REGRESSION}
    for change in comparison.cells:
        assert change.change == pytest.approx(0.3, abs=0.05)
        assert change.interval[0] > 0.05  # the whole interval is past the threshold
    assert comparison.exit_code == 1
    assert "| unet torch cpu fp32 256x256 b1 |" in ab_markdown(comparison)

    faster = compare_sides(*sides(plan, lambda side, k, t: 0.7 if side == HEAD else 1.0), plan,
                           readings(plan), SETTINGS)  # fmt: skip
    assert set(verdicts(faster).values()) == {IMPROVEMENT}
    assert faster.exit_code == 0


def test_a_side_disturbed_in_a_pair_leaves_that_pair_out():
    """A burst slows the head's pass 3 by 60%, and the sentinel read after it saw it: the two pairs that
    reading brackets are left out and the other three decide (no false regression). With two of four
    head passes hit, too few pairs are left to decide: the cells are disturbed and ab exits 3."""
    plan = schedule(5)
    burst = next(p for p in plan if (p.side, p.repeat) == (HEAD, 2))

    def speed(side, k, t):
        return 1.6 if (side, k) == (HEAD, 2) else 1.0

    def level(t):
        return 16.0 if burst.start <= t <= burst.end + 1 else 10.0

    comparison = compare_sides(*sides(plan, speed), plan, readings(plan, level), SETTINGS)
    assert set(verdicts(comparison).values()) == {UNCHANGED}
    for change in comparison.cells:
        assert change.disturbed_pairs == [2, 3] and change.pair_ratios[2:4] == [None, None]
    assert comparison.exit_code == 0

    plan = schedule(4)
    hit = [p for p in plan if p.side == HEAD and p.repeat in (1, 2)]

    def speed2(side, k, t):
        return 1.6 if side == HEAD and k in (1, 2) else 1.0

    def level2(t):
        return 16.0 if any(p.start <= t <= p.end + 1 for p in hit) else 10.0

    comparison = compare_sides(*sides(plan, speed2), plan, readings(plan, level2), SETTINGS)
    assert set(verdicts(comparison).values()) == {DISTURBED}
    assert comparison.exit_code == 3
    assert "DISTURBED" in ab_headline(comparison)


def test_drift_is_cancelled_by_interleaving():
    """The machine slows 4% with every side-pass (thermal throttling, a growing neighbour). Interleaved,
    each pair's drift alternates in sign and the paired verdict stays unchanged. The same code measured
    one side after the other (all base passes, then all head passes) and compared unpaired (segbench
    compare) reports the drift as a regression."""

    def speed(side, k, t):
        return 1.04 ** (t / SLOT_S)

    plan = schedule(6)
    interleaved = compare_sides(*sides(plan, speed), plan, readings(plan, lambda t: 10 * speed("", 0, t)),
                                SETTINGS)  # fmt: skip
    assert set(verdicts(interleaved).values()) == {UNCHANGED}

    order = [(BASE, k) for k in range(6)] + [(HEAD, k) for k in range(6)]
    sequential = schedule(6, order)
    base, head = sides(sequential, speed)
    unpaired = compare_runs(base, head, CompareSettings(threshold=0.05, alpha=0.01))
    assert set(verdicts(unpaired).values()) == {REGRESSION}
