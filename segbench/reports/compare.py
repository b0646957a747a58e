"""Compare two runs cell by cell: the regression gate ``segbench compare`` puts in CI.

Performance. Cells match on model (and its options), backend (and its options), device, precision, input
size and batch size; when a run spans several machines (a Ray cluster of two GPU types, a merged run),
also on the device model its fingerprint names, so two GPU types are never pooled or crossed. A cell
regresses only when both hold:

- its p50 end-to-end latency grew by more than ``threshold`` (5% by default), and
- the slowdown is statistically significant on the raw per-iteration samples: a one-sided Mann-Whitney U
  test of "current is slower", its p-values adjusted across all matched cells with Benjamini-Hochberg
  (scipy), below ``alpha``.

Noise on a shared machine only ever adds time, and on a shared VM it comes in bursts of seconds that slow
whole cells by 20-50% with nothing visible to the guest (measured here: two identical runs differ that
much in a third of their cells). So for a run measured in several passes (``timing.repeats``) each side
is judged on its least disturbed pass, the one with the lowest p50: the p50 and the samples compared are
that pass's (the minimum as the estimator under positive noise, as in Chen & Revels, "Robust benchmarking
in noisy environments", 2016). A real regression slows every pass, so it shows in the fastest one too;
a slowdown that hits only some passes is not reported. With one pass, the p50 and all samples are used.

The threshold alone would flag noise on a shared machine; significance alone would flag a real 1% shift
that nobody cares about. Improvements are judged the same way in the other direction. Peak memory has one
number per cell (no samples), so it regresses when it grows by more than ``threshold`` and by more than
an absolute floor (see CompareSettings), which keeps allocator and RSS jitter out.

No verdict where the machine does not vouch for the numbers (``segbench.reports.noise``): when the two
runs' hardware differs, no cell gets a performance verdict (``machine changed``, unless
``allow_machine_change``); when the noise sentinel ran at different speeds around a cell's two judged
passes, that cell is ``disturbed``. Either makes compare exit 3 (no decision) unless something regressed.

Accuracy: the two runs' numerics checks, matched and judged by :mod:`segbench.reports.accuracy` (a
check that passed and fails now, or a task metric that surely fell by more than its band allows).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control, mannwhitneyu

from segbench.env import fingerprint_fields, gpu_names
from segbench.reports import view
from segbench.reports.accuracy import CheckChange, compare_checks
from segbench.reports.judged import (
    DISTURBED,
    IMPROVEMENT,
    MACHINE_CHANGED,
    NOW_FAILING,
    WITHIN_NOISE,
    JudgedCell,
    VerdictTally,
)
from segbench.reports.noise import DEFAULT_BOUND, PassLevels, disturbed, machine_changes, sentinel_move
from segbench.reports.rundata import CELL_KEY, RunData, RunDataError, cells_frame, checks_frame
from segbench.results.verdicts import FIXED, INCONCLUSIVE, REGRESSION, STILL_FAILING, UNCHANGED


@dataclass(frozen=True)
class CompareSettings:
    threshold: float = 0.05  # relative change in p50 latency (and in peak memory) that matters
    alpha: float = 0.01  # significance level after Benjamini-Hochberg adjustment across cells
    # A peak-memory growth under these many MiB is never a regression. Device peaks are the allocator's,
    # repeatable between identical runs; host RSS peaks cover the whole process (libraries, caches, what
    # ran before the cell) and moved by up to 150 MiB between two identical CPU runs here.
    device_memory_floor_mb: float = 32.0
    host_memory_floor_mb: float = 256.0
    # How far the noise sentinel's level may move between two compared passes (segbench.reports.noise).
    sentinel_bound: float = DEFAULT_BOUND
    # Judge latencies even when the two runs' hardware differs (they are never judged otherwise).
    allow_machine_change: bool = False


@dataclass(kw_only=True)
class CellChange(JudgedCell):
    """One cell present in both runs."""

    baseline_p50_ms: float | None = None
    current_p50_ms: float | None = None
    p50_change: float | None = None  # current / baseline - 1
    throughput_change: float | None = None
    p_slower: float | None = None  # BH-adjusted one-sided Mann-Whitney p-values
    p_faster: float | None = None
    samples: tuple[int, int] = (0, 0)
    passes: tuple[int, int] = (0, 0)  # the judged pass of each run (0-based; its fastest of several)
    sentinel_change: float | None = None  # the sentinel's level around current's pass over baseline's - 1


@dataclass
class Comparison(VerdictTally):
    baseline: str
    current: str
    settings: CompareSettings
    env_differences: list[dict[str, Any]]
    cells: list[CellChange]
    new_cells: list[str]
    missing_cells: list[str]
    checks: list[CheckChange]
    new_checks: list[str]
    missing_checks: list[str]
    machine_changes: list[str] = field(default_factory=list)  # hardware differences (noise.machine_changes)
    sentinel_note: str = ""  # why the sentinel could not judge (a run without readings), else ""

    @property
    def inconclusive_checks(self) -> list[CheckChange]:
        return [c for c in self.checks if c.verdict == INCONCLUSIVE]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = {
            "regressions": len(self.regressions),
            "accuracy_regressions": len(self.accuracy_regressions),
            "inconclusive_checks": len(self.inconclusive_checks),
            "improvements": len(self.improvements),
            "disturbed": sum(c.verdict == DISTURBED for c in self.cells),
            "machine_changed": sum(c.verdict == MACHINE_CHANGED for c in self.cells),
            "matched_cells": len(self.cells),
            "new_cells": len(self.new_cells),
            "missing_cells": len(self.missing_cells),
            "exit_code": self.exit_code,
        }
        return data


def parse_threshold(text: str) -> float:
    """``5%`` or ``0.05`` -> 0.05. Raises ValueError for anything else."""
    value = text.strip()
    percent = value.endswith("%")
    try:
        number = float(value.rstrip("%").strip())
    except ValueError:
        raise ValueError(
            f"invalid threshold {text!r}: use a percentage like 5% or a fraction like 0.05"
        ) from None
    if percent:
        number /= 100
    if not math.isfinite(number) or not 0 < number < 1:
        raise ValueError(f"threshold {text!r} must lie between 0% and 100%")
    return number


# -- environment ------------------------------------------------------------------------------------

_ENV_EXTRAS = ("python", "platform", "ram_mb", "torch_threads", "git_dirty", "config_hash", "schema")


def _flat_env(env: dict[str, Any]) -> dict[str, Any]:
    fields = fingerprint_fields(env)
    flat: dict[str, Any] = {"fingerprint": env.get("fingerprint")}
    for key, value in fields.items():
        if key == "packages":
            continue
        flat[key] = ", ".join(map(str, value)) if isinstance(value, list) else value
    for name, version in sorted((env.get("packages") or {}).items()):
        flat[f"package {name}"] = version
    for key in _ENV_EXTRAS:
        flat[key] = env.get(key)
    providers = env.get("onnxruntime_providers")
    flat["onnxruntime providers"] = ", ".join(providers) if providers else providers
    return flat


def env_differences(baseline: dict[str, Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    """The environment fields (machine, versions, revision, config) that differ between two runs."""
    a, b = _flat_env(baseline), _flat_env(current)
    return [
        {"field": key, "baseline": a.get(key), "current": b.get(key)}
        for key in dict.fromkeys([*a, *b])
        if a.get(key) != b.get(key)
    ]


# -- cells ------------------------------------------------------------------------------------------


def _key(row: pd.Series | dict[str, Any], columns: tuple[str, ...]) -> tuple:
    return tuple(row[c] for c in columns)


def cell_labels(frame: pd.DataFrame, key: tuple[str, ...] = CELL_KEY) -> dict[tuple, str]:
    """``unet torch cpu fp32 256x256 b4`` per cell key; the model's options are added only where the
    same model runs with several option sets (they are in the JSON output either way), the device model
    where the runs span several machines."""
    option_sets = frame.groupby("model")["model_options"].nunique()
    labels = {}
    for _, row in frame.iterrows():
        several = option_sets[row["model"]] > 1
        model = view.model_label(row["model"], row["model_options"] if several else None)
        machine = f" on {row['machine']}" if "machine" in key else ""
        labels[_key(row, key)] = view.cell_label(row, model) + machine
    return labels


def _relative(new: float | None, old: float | None) -> float | None:
    if new is None or old is None or not (math.isfinite(new) and math.isfinite(old)) or old <= 0:
        return None
    return new / old - 1


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def judged_pass(row: pd.Series) -> tuple[float | None, list[float], int]:
    """The p50 and the raw samples a cell is judged on, and the pass they come from: its least
    disturbed pass (lowest p50) when it was measured in several, else the whole cell (pass 0)."""
    p50s, sizes = list(row["repeat_p50_ms"]), list(row["repeat_sizes"])
    samples = list(row["samples_ms"])
    if len(p50s) < 2 or any(p is None for p in p50s) or sum(sizes) != len(samples):
        return _number(row["p50_ms"]), samples, 0
    best = int(np.argmin(p50s))
    start = sum(sizes[:best])
    return float(p50s[best]), samples[start : start + sizes[best]], best


def _one_sided_p(current: list[float], baseline: list[float], alternative: str) -> float | None:
    if len(current) < 2 or len(baseline) < 2:
        return None
    return float(mannwhitneyu(current, baseline, alternative=alternative, method="auto").pvalue)


def memory_changes(
    old: pd.Series, new: pd.Series, settings: CompareSettings
) -> tuple[dict[str, dict[str, float | None]], list[str]]:
    changes, regressed = {}, []
    floors = {
        "peak_host_mb": settings.host_memory_floor_mb,
        "peak_device_mb": settings.device_memory_floor_mb,
    }
    for column, floor in floors.items():
        before, after = _number(old[column]), _number(new[column])
        if before is None and after is None:
            continue
        relative = _relative(after, before)
        changes[column] = {"baseline": before, "current": after, "change": relative}
        grown = after - before if after is not None and before is not None else None
        if relative is not None and grown is not None and relative > settings.threshold and grown > floor:
            regressed.append(column)
    return changes, regressed


def _compare_cells(
    baseline: pd.DataFrame, current: pd.DataFrame, settings: CompareSettings, key: tuple[str, ...] = CELL_KEY
) -> tuple[list[CellChange], list[str], list[str]]:
    old = {_key(row, key): row for _, row in baseline.iterrows()}
    new = {_key(row, key): row for _, row in current.iterrows()}
    labels = cell_labels(pd.concat([baseline, current], ignore_index=True), key)
    cell_key = key
    missing = [labels[k] for k in old if k not in new]
    added = [labels[k] for k in new if k not in old]
    changes: list[CellChange] = []
    tested: list[CellChange] = []  # cells ok in both runs, whose p-values get adjusted together
    raw_p: list[tuple[float | None, float | None]] = []
    for key, before in old.items():
        if key not in new:
            continue
        after = new[key]
        change = CellChange(
            cell=dict(zip(cell_key, (v.item() if hasattr(v, "item") else v for v in key), strict=True)),
            label=labels[key],
            verdict=UNCHANGED,
        )
        (change.baseline_p50_ms, samples_before, pass_before) = judged_pass(before)
        (change.current_p50_ms, samples_after, pass_after) = judged_pass(after)
        change.passes = (pass_before, pass_after)
        ok_before, ok_after = before["status"] == "ok", after["status"] == "ok"
        if not (ok_before and ok_after):
            change.verdict = {
                (True, False): NOW_FAILING,
                (False, True): FIXED,
                (False, False): STILL_FAILING,
            }[(ok_before, ok_after)]
            change.note = (after["error"] or "") if not ok_after else ""
            changes.append(change)
            continue
        change.p50_change = _relative(change.current_p50_ms, change.baseline_p50_ms)
        throughput = _number(after["throughput_ips"]), _number(before["throughput_ips"])
        change.throughput_change = _relative(*throughput)
        change.memory, change.memory_regression = memory_changes(before, after, settings)
        change.samples = (len(samples_before), len(samples_after))
        raw_p.append(
            (
                _one_sided_p(samples_after, samples_before, "greater"),
                _one_sided_p(samples_after, samples_before, "less"),
            )
        )
        tested.append(change)
        changes.append(change)
    _adjust_and_judge(tested, raw_p, settings)
    return changes, added, missing


def bh_adjust(p_values: list[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values over the cells that could be tested."""
    present = [p for p in p_values if p is not None]
    if not present:
        return list(p_values)
    adjusted = iter(false_discovery_control(np.asarray(present), method="bh").tolist())
    return [None if p is None else next(adjusted) for p in p_values]


def _adjust_and_judge(
    tested: list[CellChange], raw_p: list[tuple[float | None, float | None]], settings: CompareSettings
) -> None:
    slower = bh_adjust([p for p, _ in raw_p])
    faster = bh_adjust([p for _, p in raw_p])
    for change, p_slower, p_faster in zip(tested, slower, faster, strict=True):
        change.p_slower, change.p_faster = p_slower, p_faster
        relative = change.p50_change
        if relative is None or abs(relative) <= settings.threshold:
            continue
        p_value = p_slower if relative > 0 else p_faster
        if p_value is None:
            change.verdict = INCONCLUSIVE
            change.note = "past the threshold, but a run has too few samples to test"
        elif p_value < settings.alpha:
            change.verdict = REGRESSION if relative > 0 else IMPROVEMENT
        else:
            change.verdict = WITHIN_NOISE
            change.note = f"past the threshold, not significant (p={view.p_value(p_value)})"


# -- runs over several machines (a Ray cluster of two GPU types, a merged run) -----------------------


def _environments(env: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every environment a run names, by fingerprint: its own, a merged run's parts, a cluster's nodes."""
    found: dict[str, dict[str, Any]] = {}
    for part in (env, *(env.get("parts") or ())):
        for each in (part, *(part.get("nodes") or ())):
            if each.get("fingerprint"):
                found.setdefault(each["fingerprint"], each)
    return found


def _machine(env: dict[str, Any]) -> str:
    """The device model a fingerprint stands for: its GPUs, else its CPU."""
    return ", ".join(gpu_names(env) or []) or str(env.get("cpu") or env.get("fingerprint"))


def _row_machine(row: dict[str, Any], run: RunData, envs: dict[str, dict[str, Any]]) -> str:
    # A row whose fingerprint the run does not list (a resumed session's) ran on the run's machine.
    fingerprint = (row.get("env") or {}).get("fingerprint")
    found = envs.get(fingerprint) if fingerprint is not None else None
    return _machine(found or run.env)


def _machines(run: RunData) -> dict[str, tuple[list, list]]:
    """The run's cell and numerics rows per device model."""
    envs = _environments(run.env)
    groups: dict[str, tuple[list, list]] = {}
    for index, rows in enumerate((run.results, run.numerics)):
        for row in rows:
            groups.setdefault(_row_machine(row, run, envs), ([], []))[index].append(row)
    return groups


def _compare_by_machine(baseline: RunData, current: RunData, settings: CompareSettings) -> tuple:
    """Cells and checks matched on their key and their device model: two GPU types never mix. The
    p-values are adjusted across every machine's cells together."""
    old, new = _machines(baseline), _machines(current)
    machine = "machine"
    frames = []
    for groups in (old, new):
        cells = [cells_frame(rows).assign(**{machine: name}) for name, (rows, _) in groups.items() if rows]
        frames.append(pd.concat(cells, ignore_index=True) if cells else cells_frame([]).assign(machine=""))
    key = (*CELL_KEY, machine)
    cells, added, missing = _compare_cells(frames[0], frames[1], settings, key=key)
    checks, new_checks, missing_checks = [], [], []
    for name in dict.fromkeys([*old, *new]):
        before, after = old.get(name, ([], []))[1], new.get(name, ([], []))[1]
        changes, plus, minus = compare_checks(checks_frame(before), checks_frame(after))
        for change in changes:
            change.label = f"{change.label} on {name}"
        checks += changes
        new_checks += [f"{label} on {name}" for label in plus]
        missing_checks += [f"{label} on {name}" for label in minus]
    return cells, added, missing, checks, new_checks, missing_checks


def compare_runs(baseline: RunData, current: RunData, settings: CompareSettings | None = None) -> Comparison:
    """Match the two runs' cells and checks and judge every change (see the module docstring)."""
    settings = settings or CompareSettings()
    if baseline.schema != current.schema:
        raise RunDataError(
            f"cannot compare: {baseline.path} has results schema {baseline.schema}, "
            f"{current.path} has {current.schema}"
        )
    if not baseline.results and not baseline.numerics:
        raise RunDataError(f"{baseline.path} holds no results to compare")
    if len(_machines(baseline)) > 1 or len(_machines(current)) > 1:
        cells, new_cells, missing_cells, checks, new_checks, missing_checks = _compare_by_machine(
            baseline, current, settings
        )
    else:  # one machine a side: cells match on their key alone, as they always did
        cells, new_cells, missing_cells = _compare_cells(baseline.cells, current.cells, settings)
        checks, new_checks, missing_checks = compare_checks(baseline.checks, current.checks)
    changed = machine_changes(baseline.env, current.env)
    sentinel_note = _judge_machine(cells, baseline, current, changed, settings)
    return Comparison(
        baseline=str(baseline.path),
        current=str(current.path),
        settings=settings,
        env_differences=env_differences(baseline.env, current.env),
        cells=cells,
        new_cells=new_cells,
        missing_cells=missing_cells,
        checks=checks,
        new_checks=new_checks,
        missing_checks=missing_checks,
        machine_changes=changed,
        sentinel_note=sentinel_note,
    )


def _judge_machine(
    cells: list[CellChange],
    baseline: RunData,
    current: RunData,
    changed: list[str],
    settings: CompareSettings,
) -> str:
    """Take the performance verdict from cells whose two measurements the machine does not vouch for:
    every cell when the hardware changed (unless allowed; memory too, as it depends on the hardware), a
    cell whose judged passes the sentinel saw at different speeds. Returns why the sentinel judged
    nothing, if it could not."""
    levels = PassLevels.of(baseline.sentinel), PassLevels.of(current.sentinel)
    judged = [c for c in cells if c.verdict not in (NOW_FAILING, FIXED, STILL_FAILING)]
    for change in judged:
        if changed and not settings.allow_machine_change:
            change.verdict, change.memory_regression = MACHINE_CHANGED, []
            change.note = "measured on other hardware: " + "; ".join(changed)
            continue
        change.sentinel_change = sentinel_move(*levels, str(change.cell["device"]), change.passes)
        if disturbed(change.sentinel_change, settings.sentinel_bound):
            before, after = (p + 1 for p in change.passes)
            change.verdict = DISTURBED
            bound = settings.sentinel_bound
            change.note = (f"the noise sentinel ran {change.sentinel_change:+.0%} around current pass "
                           f"{after} vs baseline pass {before} (bound {bound:.0%})")  # fmt: skip
    missing = [run.path for run, found in zip((baseline, current), levels, strict=True) if not found]
    if not judged or not missing or (changed and not settings.allow_machine_change):
        return ""
    return f"no noise-sentinel readings in {', '.join(map(str, missing))}: disturbance not checked"


def comparison_json(comparison: Comparison) -> str:
    return json.dumps(comparison.to_dict(), indent=2, allow_nan=False, default=str) + "\n"
