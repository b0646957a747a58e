"""segbench compare: noise-aware performance verdicts, accuracy verdicts, environment differences, CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from segbench.cli import main
from segbench.reports.compare import (
    FIXED,
    INCONCLUSIVE,
    NOW_FAILING,
    REGRESSION,
    STILL_FAILING,
    UNCHANGED,
    WITHIN_NOISE,
    CompareSettings,
    compare_runs,
    parse_threshold,
)
from segbench.reports.rundata import load_run
from segbench.results.jsonl import read_jsonl
from segbench.results.latency import latency_stats
from segbench.results.layout import RESULTS_FILE
from tests.fakes.runs import ENV, cell, check, noisy, write_run

REPORTS = Path(__file__).parents[2] / "reports"
DEFAULT_RUN = REPORTS / "cpu-default"


def grid(seed: int, slower: dict[tuple[str, str, int], float] | None = None) -> list[dict]:
    """Eight cells with 40 noisy samples each; ``slower`` scales chosen cells' samples."""
    rows = []
    for index, (model, backend, batch) in enumerate(
        (m, b, n) for m in ("unet", "fcn8s") for b in ("torch", "onnxruntime") for n in (1, 4)
    ):
        median = {"torch": 20.0, "onnxruntime": 12.0}[backend] * batch
        samples = noisy(median, seed=seed * 100 + index) * (slower or {}).get((model, backend, batch), 1.0)
        rows.append(cell(model, backend, batch, samples=samples))
    return rows


def verdicts(comparison) -> dict[str, str]:
    return {c.label: c.verdict for c in comparison.cells}


def scaled(record: dict, factor: float) -> dict:
    """The same cell with every sample ``factor`` times longer (statistics recomputed)."""
    record = copy.deepcopy(record)
    record["samples_ms"] = [v * factor for v in record["samples_ms"]]
    record["latency_ms"] = latency_stats(record["samples_ms"])
    record["throughput_ips"] = record["batch_size"] * 1000.0 / record["latency_ms"]["mean"]
    return record


# -- performance ------------------------------------------------------------------------------------


def test_two_samples_of_the_same_machine_flag_nothing(tmp_path):
    # A/A: two independent draws of the same noise (3% spread and 5% hiccups), every cell.
    for seed in range(5):
        base = load_run(write_run(tmp_path / f"a{seed}", grid(seed)))
        again = load_run(write_run(tmp_path / f"b{seed}", grid(seed + 50)))
        comparison = compare_runs(base, again)
        assert comparison.regressions == [] and comparison.improvements == []
        assert comparison.exit_code == 0


def test_one_cell_30_percent_slower_is_exactly_the_regression(tmp_path):
    base = load_run(write_run(tmp_path / "a", grid(1)))
    slow = load_run(write_run(tmp_path / "b", grid(2, slower={("fcn8s", "onnxruntime", 4): 1.3})))
    comparison = compare_runs(base, slow)
    assert [c.label for c in comparison.regressions] == ["fcn8s onnxruntime cpu fp32 256x256 b4"]
    (regression,) = comparison.regressions
    assert regression.p50_change == pytest.approx(0.3, abs=0.06)
    assert regression.p_slower < 1e-6 and regression.throughput_change < -0.15
    assert comparison.exit_code == 1


def test_a_faster_cell_is_an_improvement_not_a_regression(tmp_path):
    base = load_run(write_run(tmp_path / "a", grid(1)))
    fast = load_run(write_run(tmp_path / "b", grid(2, slower={("unet", "torch", 1): 0.7})))
    comparison = compare_runs(base, fast)
    assert [c.label for c in comparison.improvements] == ["unet torch cpu fp32 256x256 b1"]
    assert comparison.exit_code == 0


def test_a_small_significant_shift_under_the_threshold_is_unchanged(tmp_path):
    # 3% slower with 400 quiet samples is significant, but under the 5% threshold.
    quiet = noisy(10.0, n=400, spread=0.005, seed=1)
    base = load_run(write_run(tmp_path / "a", [cell(samples=quiet)]))
    shifted = load_run(write_run(tmp_path / "b", [cell(samples=noisy(10.3, n=400, spread=0.005, seed=2))]))
    (change,) = compare_runs(base, shifted).cells
    assert change.p_slower < 1e-6
    assert change.verdict == UNCHANGED
    # With a 2% threshold the same shift is a regression.
    (change,) = compare_runs(base, shifted, CompareSettings(threshold=0.02)).cells
    assert change.verdict == REGRESSION


def test_a_large_change_inside_the_noise_is_not_a_regression(tmp_path):
    # p50 moves 8%, but the samples spread 40%: no evidence of a slowdown.
    base = load_run(write_run(tmp_path / "a", [cell(samples=noisy(10.0, n=12, spread=0.4, seed=3))]))
    again = load_run(write_run(tmp_path / "b", [cell(samples=noisy(10.0, n=12, spread=0.4, seed=4))]))
    (change,) = compare_runs(base, again).cells
    assert abs(change.p50_change) > 0.05
    assert change.verdict == WITHIN_NOISE
    assert compare_runs(base, again).exit_code == 0


def test_too_few_samples_is_inconclusive(tmp_path):
    base = load_run(write_run(tmp_path / "a", [cell(samples=[10.0])]))
    slow = load_run(write_run(tmp_path / "b", [cell(samples=[20.0])]))
    (change,) = compare_runs(base, slow).cells
    assert change.verdict == INCONCLUSIVE and "too few samples" in change.note
    assert compare_runs(base, slow).exit_code == 0


def test_failed_cells_new_and_missing_cells(tmp_path):
    base = load_run(
        write_run(
            tmp_path / "a",
            [cell(batch=1), cell(batch=4, status="failed"), cell(batch=8), cell(batch=16, status="failed"),
             cell(backend="onnxruntime")],
        )
    )  # fmt: skip
    current = load_run(
        write_run(
            tmp_path / "b",
            [cell(batch=1, status="crashed"), cell(batch=4), cell(batch=8), cell(batch=16, status="failed"),
             cell(backend="onnxruntime", precision="fp16")],
        )
    )  # fmt: skip
    comparison = compare_runs(base, current)
    assert verdicts(comparison) == {
        "unet torch cpu fp32 256x256 b1": NOW_FAILING,
        "unet torch cpu fp32 256x256 b4": FIXED,
        "unet torch cpu fp32 256x256 b8": UNCHANGED,
        "unet torch cpu fp32 256x256 b16": STILL_FAILING,
    }
    assert comparison.missing_cells == ["unet onnxruntime cpu fp32 256x256 b1"]
    assert comparison.new_cells == ["unet onnxruntime cpu fp16 256x256 b1"]
    assert [c.label for c in comparison.regressions] == ["unet torch cpu fp32 256x256 b1"]
    assert comparison.regressions[0].note == "RuntimeError: out of memory"
    assert comparison.exit_code == 1


def test_backend_options_and_model_options_tell_cells_apart(tmp_path):
    rows = [cell(), cell(options={"channels_last": True}, samples=[30.0, 31.0, 30.5, 30.2])]
    other_model = cell(model_options={"num_classes": 6, "width": 0.5}, samples=[40.0, 41.0, 40.5, 40.2])
    base = load_run(write_run(tmp_path / "a", rows))
    current = load_run(write_run(tmp_path / "b", [*rows, other_model]))
    comparison = compare_runs(base, current)
    assert sorted(verdicts(comparison).values()) == [UNCHANGED, UNCHANGED]
    # The same model with two option sets: every label of that model says which (as the figures do).
    assert "unet (num_classes=6) torch (channels_last=True) cpu fp32 256x256 b1" in verdicts(comparison)
    assert comparison.new_cells == ["unet (num_classes=6, width=0.5) torch cpu fp32 256x256 b1"]


def test_memory_growth_past_threshold_and_floor_regresses(tmp_path):
    samples = noisy(10.0, seed=5)
    base = load_run(
        write_run(
            tmp_path / "a",
            [cell(batch=1, samples=samples, peak_device_mb=1000.0), cell(batch=4, samples=samples * 4)],
        )
    )
    current = load_run(
        write_run(
            tmp_path / "b",
            [
                cell(batch=1, samples=samples, peak_device_mb=1500.0),
                # Host RSS +120 MiB (+13%): under the host floor, RSS moves that much between identical runs.
                cell(batch=4, samples=samples * 4, peak_host_mb=1020.0),
            ],
        )
    )
    comparison = compare_runs(base, current)
    by_label = {c.label: c for c in comparison.cells}
    device = by_label["unet torch cpu fp32 256x256 b1"]
    assert device.verdict == UNCHANGED and device.memory_regression == ["peak_device_mb"]
    assert device.memory["peak_device_mb"]["change"] == pytest.approx(0.5)
    assert by_label["unet torch cpu fp32 256x256 b4"].memory_regression == []
    assert [c.label for c in comparison.regressions] == ["unet torch cpu fp32 256x256 b1"]
    assert comparison.exit_code == 1


# -- accuracy ---------------------------------------------------------------------------------------


def test_accuracy_regressions_use_the_numerics_tolerances(tmp_path):
    rows = [cell()]
    base_checks = [
        check(role="baseline", backend="torch"),
        check(metric="miou"),
        check(metric="pixel_accuracy", value=90.0, baseline=90.0),
        check(metric="mean_dice", value=80.0, baseline=80.0),
        check(level="tensor", metric="tensors", value=0.001, baseline=None, tolerance=0.01),
        {**check(level="diagnosis", metric="fp16 diagnosis", value=None, baseline=None), "passed": None},
    ]
    current_checks = [
        # -1.0: past the fp32 tolerance of 0.5.
        check(role="baseline", backend="torch", value=74.0, baseline=74.0),
        # -1.0 too, but still equal to its own PyTorch baseline: the model fell (the torch row says so),
        # not this backend against PyTorch.
        check(metric="miou", value=74.0, baseline=74.0),
        check(metric="pixel_accuracy", value=89.8, baseline=90.0),  # -0.2: inside the tolerance
        check(metric="mean_dice", value=79.0, baseline=80.0, passed=False),  # fails its check now
        check(level="tensor", metric="tensors", value=0.02, baseline=None, tolerance=0.01, passed=False),
    ]
    base = load_run(write_run(tmp_path / "a", rows, base_checks))
    current = load_run(write_run(tmp_path / "b", rows, current_checks))
    comparison = compare_runs(base, current)
    regressed = {c.label: c for c in comparison.accuracy_regressions}
    assert sorted(regressed) == [
        "unet onnxruntime cpu fp32 mean_dice",
        "unet onnxruntime cpu fp32 tensors",
        "unet torch cpu fp32 miou",
    ]
    assert regressed["unet torch cpu fp32 miou"].tolerance == 0.5  # a baseline row takes its run's tolerance
    assert regressed["unet torch cpu fp32 miou"].note.startswith("fell 1.000 points against the baseline run")
    assert regressed["unet onnxruntime cpu fp32 mean_dice"].note == "passed in the baseline run, fails now"
    assert comparison.regressions == [] and comparison.exit_code == 1
    assert len(comparison.checks) == 5  # the diagnosis row carries no verdict and is left out


def _accuracy(tmp_path, before: list[dict], after: list[dict]):
    base = load_run(write_run(tmp_path / "a", [cell()], before))
    current = load_run(write_run(tmp_path / "b", [cell()], after))
    return compare_runs(base, current)


def box_ap(value: float, **kwargs) -> dict:
    return check(model="mask_rcnn", metric="bbox_ap", value=value, baseline=52.52, tolerance=0.2, **kwargs)


def test_box_ap_going_up_is_never_an_accuracy_regression(tmp_path):
    # Mask R-CNN's box AP rose 52.65 -> 52.76; its check failed in the baseline run and fails now
    # (a shift away from PyTorch, upwards). Not a regression: it did not pass before, and it did not fall.
    comparison = _accuracy(
        tmp_path,
        [box_ap(52.65, verdict="fail", ci=(0.05, 0.21))],
        [box_ap(52.76, verdict="fail", ci=(0.21, 0.27))],
    )
    (change,) = comparison.checks
    assert change.change == pytest.approx(0.11) and change.verdict == STILL_FAILING
    assert comparison.accuracy_regressions == [] and comparison.exit_code == 0
    # The committed run's row (old format: passed, a paired interval), now inconclusive: reported so.
    paired = {"mean": 0.002, "ci_low": -0.17, "ci_high": 0.18, "images": 29, "changed": 2, "worst": []}
    comparison = _accuracy(
        tmp_path,
        [box_ap(52.65, passed=True, paired=paired)],
        [box_ap(52.76, verdict="inconclusive", ci=(-0.05, 0.5), images_needed=90)],
    )
    (change,) = comparison.checks
    assert change.verdict == INCONCLUSIVE and not change.regressed
    assert "~90 images would decide" in change.note
    assert comparison.inconclusive_checks == [change] and comparison.exit_code == 0


def test_a_check_that_passed_and_fails_now_is_a_regression(tmp_path):
    for before in (box_ap(52.60, verdict="pass", ci=(-0.05, 0.2)), box_ap(52.60, passed=True)):
        comparison = _accuracy(tmp_path, [before], [box_ap(52.10, verdict="fail", ci=(-0.6, -0.25))])
        (change,) = comparison.accuracy_regressions
        assert change.verdict == REGRESSION and change.note == "passed in the baseline run, fails now"
        assert comparison.exit_code == 1
    # Inconclusive before, fail now: a regression too.
    comparison = _accuracy(
        tmp_path,
        [box_ap(52.45, verdict="inconclusive", ci=(-0.4, 0.2))],
        [box_ap(52.10, verdict="fail", ci=(-0.6, -0.25))],
    )
    assert [c.verdict for c in comparison.checks] == [REGRESSION]


def test_runs_that_evaluated_different_image_counts_compare_deviations(tmp_path):
    """A run that grew its evaluation set to 128 images reports box AP on other images than one that
    stopped at 32: the values differ by points, the deviations from each run's PyTorch do not."""

    def torch_box_ap(value: float, images: int) -> dict:
        return check(model="mask_rcnn", backend="torch", metric="bbox_ap", role="baseline", value=value,
                     baseline=value, verdict="pass", images=images)  # fmt: skip

    before = [
        box_ap(52.65, verdict="pass", ci=(-0.07, 0.18), images=32) | {"delta": 0.13},
        torch_box_ap(52.52, images=32),
    ]
    after = [
        box_ap(49.39, verdict="pass", ci=(-0.11, 0.11), images=128) | {"baseline": 49.38, "delta": 0.001},
        torch_box_ap(50.0, images=16),
    ]
    comparison = _accuracy(tmp_path, before, after)
    assert not comparison.accuracy_regressions
    changes = {c.check["backend"]: c for c in comparison.checks}
    assert changes["onnxruntime"].change == pytest.approx(0.001 - 0.13)
    assert changes["torch"].change is None and "32 and 16 images" in changes["torch"].note


def test_a_fall_is_judged_with_both_runs_intervals(tmp_path):
    def miou(value, low, high, verdict="pass"):
        return check(
            value=value, baseline=75.0, verdict=verdict, ci=(value - 75.0 + low, value - 75.0 + high)
        )

    # Both runs still pass against their own PyTorch baselines; between the runs miou fell 0.8 points,
    # past the band's lower edge (-0.5). Narrow intervals: surely past it, a regression.
    sure = _accuracy(tmp_path, [miou(75.4, -0.05, 0.05)], [miou(74.6, -0.05, 0.05)])
    (change,) = sure.checks
    assert change.verdict == REGRESSION and change.change_high < change.limit == -0.5
    assert change.note.startswith(
        "its deviation from PyTorch fell 0.800 points against the baseline run (interval ["
    )
    # Wide intervals: the fall may be inside the band, so it is inconclusive, not a regression.
    unsure = _accuracy(tmp_path, [miou(75.4, -0.4, 0.4)], [miou(74.6, -0.4, 0.4)])
    (change,) = unsure.checks
    assert change.verdict == INCONCLUSIVE and change.change_low < -0.5 < change.change_high
    assert unsure.exit_code == 0
    # A fall inside the band, and a rise past it, are no regressions.
    inside = _accuracy(tmp_path, [miou(75.2, -0.05, 0.05)], [miou(74.9, -0.05, 0.05)])
    rise = _accuracy(tmp_path, [miou(74.6, -0.05, 0.05)], [miou(75.4, -0.05, 0.05)])
    assert [c.verdict for c in inside.checks + rise.checks] == [UNCHANGED, UNCHANGED]


def test_compare_prints_and_writes_inconclusive_checks(tmp_path, capsys):
    base = write_run(tmp_path / "a", [cell()], [box_ap(52.65, verdict="pass", ci=(-0.1, 0.3))])
    now = write_run(tmp_path / "b", [cell()], [box_ap(52.76, verdict="inconclusive", ci=(-0.05, 0.5))])
    md, js = tmp_path / "c.md", tmp_path / "c.json"
    assert main(["compare", str(base), str(now), "--md", str(md), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "Inconclusive checks" in out and "Accuracy regressions" not in out
    assert "1 numerics check(s) inconclusive" in out
    assert "## Inconclusive checks" in md.read_text()
    summary = json.loads(js.read_text())["summary"]
    assert summary["inconclusive_checks"] == 1 and summary["accuracy_regressions"] == 0


# -- environment and input --------------------------------------------------------------------------


def test_environment_differences_are_listed(tmp_path):
    env = {**ENV, "fingerprint": "999999999999", "packages": {**ENV["packages"], "torch": "2.15.0"}}
    base = load_run(write_run(tmp_path / "a", [cell()]))
    current = load_run(write_run(tmp_path / "b", [cell()], env=env))
    found = compare_runs(base, current).env_differences
    assert {d["field"]: (d["baseline"], d["current"]) for d in found} == {
        "fingerprint": ("f1f2f3f4f5f6", "999999999999"),
        "package torch": ("2.14.1", "2.15.0"),
    }
    assert compare_runs(base, base).env_differences == []


@pytest.mark.parametrize(("text", "value"), [("5%", 0.05), ("12.5%", 0.125), ("0.05", 0.05), (" 10 % ", 0.1)])
def test_parse_threshold(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "0", "150%", "-5%", "nan", "1"])
def test_parse_threshold_rejects(text):
    with pytest.raises(ValueError, match="threshold"):
        parse_threshold(text)


# -- the command ------------------------------------------------------------------------------------


def test_compare_cli_writes_markdown_and_json_and_exits_1_on_the_slow_cell(tmp_path, capsys):
    base = write_run(tmp_path / "a", grid(1))
    slow = write_run(tmp_path / "b", grid(2, slower={("unet", "onnxruntime", 1): 1.3}))
    md, js = tmp_path / "c.md", tmp_path / "c.json"
    code = main(["compare", str(base), str(slow), "--md", str(md), "--json", str(js)])
    assert code == 1
    assert "Cells that changed" in capsys.readouterr().out
    data = json.loads(js.read_text())
    assert data["summary"]["regressions"] == 1 and data["summary"]["exit_code"] == 1
    assert [c["label"] for c in data["cells"] if c["verdict"] == REGRESSION] == [
        "unet onnxruntime cpu fp32 256x256 b1"
    ]
    markdown = md.read_text()
    assert "## Regressions and improvements" in markdown
    assert "| unet onnxruntime cpu fp32 256x256 b1 |" in markdown
    # A/A through the command: exit 0.
    assert main(["compare", str(base), str(write_run(tmp_path / "c", grid(3)))]) == 0


def test_compare_a_real_run_with_itself_and_with_one_cell_slowed(tmp_path):
    # The committed default CPU run: identical against itself; one of its 46 cells made 30% slower (the
    # very samples it measured, scaled) is flagged, and only that one.
    assert main(["compare", str(DEFAULT_RUN), str(DEFAULT_RUN)]) == 0
    rows = read_jsonl(DEFAULT_RUN / RESULTS_FILE)
    target = next(i for i, r in enumerate(rows) if r["model"] == "unet" and r["backend"] == "onnxruntime")
    rows[target] = scaled(rows[target], 1.3)
    env = json.loads((DEFAULT_RUN / "env.json").read_text())
    slow = write_run(tmp_path / "slow", rows, read_jsonl(DEFAULT_RUN / "numerics.jsonl"), env=env)
    comparison = compare_runs(load_run(DEFAULT_RUN), load_run(slow))
    assert [c.label for c in comparison.regressions] == ["unet onnxruntime cpu fp32 256x256 b1"]
    assert comparison.exit_code == 1


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no such run directory"),
        (lambda d: d.mkdir(), "neither results.jsonl nor numerics.jsonl"),
        (lambda d: write_run(d, [cell()], env={**ENV, "schema": 99}), "results schema 99"),
        (lambda d: (d.mkdir(), (d / RESULTS_FILE).write_text('{"model": "x"}\n')), "lacks backend"),
        (lambda d: (d.mkdir(), (d / RESULTS_FILE).write_text('{"a": 1\n{"b": 2}\n')), "not valid JSON"),
        (lambda d: (d.mkdir(), (d / RESULTS_FILE).write_text("[1, 2]\n")), "not a JSON object"),
        (lambda d: (write_run(d, [cell()]), (d / "env.json").write_text("[]")), "not a JSON object"),
    ],
)
def test_bad_run_directories_give_one_error_line(tmp_path, capsys, setup, message):
    good = write_run(tmp_path / "good", [cell()])
    bad = tmp_path / "bad"
    setup(bad)
    for argv in (["compare", str(good), str(bad)], ["compare", str(bad), str(good)], ["report", str(bad)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("segbench: error:") and message in err, err


def test_bad_threshold_and_unwritable_output_exit_2(tmp_path, capsys):
    run = write_run(tmp_path / "a", [cell()])
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(run), str(run), "--threshold", "lots"])
    assert exc.value.code == 2
    assert "invalid threshold" in capsys.readouterr().err
    assert main(["compare", str(run), str(run), "--md", str(tmp_path / "missing" / "c.md")]) == 2
    assert "cannot write" in capsys.readouterr().err


def passes(factors: list[float], seed: int, median: float = 10.0) -> list[dict]:
    """One cell measured in len(factors) passes, each pass's samples scaled by its factor."""
    return [
        {**cell(samples=noisy(median, n=30, spread=0.02, seed=seed + i) * factor), "repeat": i}
        for i, factor in enumerate(factors)
    ]


def test_passes_spoilt_by_contention_are_not_a_regression(tmp_path):
    # Bursts of contention (a whole pass 50% slower) hit one or two passes of three: each run is judged
    # on its fastest pass, which the bursts did not reach.
    base = load_run(write_run(tmp_path / "a", passes([1.0, 1.0, 1.0], seed=10)))
    for name, factors in (("one", [1.0, 1.5, 1.0]), ("two", [1.5, 1.0, 1.4])):
        burst = load_run(write_run(tmp_path / name, passes(factors, seed=20)))
        (change,) = compare_runs(base, burst).cells
        assert change.samples == (30, 30)  # one pass a side
        assert abs(change.p50_change) < 0.05 and change.verdict == UNCHANGED
    # Slower in every pass: a regression, judged on the fastest pass of each run.
    slow = load_run(write_run(tmp_path / "c", passes([1.3, 1.35, 1.4], seed=30)))
    (change,) = compare_runs(base, slow).cells
    assert change.verdict == REGRESSION and change.p50_change == pytest.approx(0.3, abs=0.03)
    assert change.p_slower < 1e-6


def test_passes_are_pooled_and_a_failed_pass_fails_the_cell(tmp_path):
    rows = passes([1.0, 2.0], seed=40)
    rows.append({**cell(batch=4, status="ok"), "repeat": 0})
    rows.append({**cell(batch=4, status="failed"), "repeat": 1})
    cells = load_run(write_run(tmp_path / "a", rows)).cells
    pooled, failed = cells.iloc[0], cells.iloc[1]
    assert pooled["repeats"] == 2 and len(pooled["samples_ms"]) == 60 and pooled["repeat_sizes"] == [30, 30]
    assert pooled["repeat_p50_ms"] == [rows[0]["latency_ms"]["p50"], rows[1]["latency_ms"]["p50"]]
    assert pooled["p50_ms"] == pytest.approx(float(np.median(rows[0]["samples_ms"] + rows[1]["samples_ms"])))
    assert failed["status"] == "failed" and np.isnan(failed["p50_ms"]) and failed["error"]


CI_BASELINE = REPORTS / "cpu-ci-baseline"
CI_RERUN = REPORTS / "cpu-ci-rerun"  # examples/benchmark-ci.yaml again: same code and machine, right after


def test_a_committed_rerun_of_the_ci_benchmark_flags_nothing():
    # Measured A/A on the 2-core CI VM: two back-to-back runs of examples/benchmark-ci.yaml (5 passes each).
    # Its run-to-run noise after the fastest-pass rule reaches 12% in a cell, hence the 15% threshold
    # the example workflow uses on it.
    comparison = compare_runs(load_run(CI_BASELINE), load_run(CI_RERUN), CompareSettings(threshold=0.15))
    assert len(comparison.cells) == 10 and len(comparison.checks) == 19
    assert comparison.regressions == [] and comparison.accuracy_regressions == []
    assert comparison.exit_code == 0


def test_the_committed_rerun_with_one_cell_30_percent_slower_flags_exactly_it(tmp_path):
    rows = read_jsonl(CI_RERUN / RESULTS_FILE)
    target = ("unet", "onnxruntime", 4)
    rows = [scaled(r, 1.3) if (r["model"], r["backend"], r["batch_size"]) == target else r for r in rows]
    env = json.loads((CI_RERUN / "env.json").read_text())
    slow = write_run(tmp_path / "slow", rows, read_jsonl(CI_RERUN / "numerics.jsonl"), env=env)
    comparison = compare_runs(load_run(CI_BASELINE), load_run(slow), CompareSettings(threshold=0.15))
    assert [c.label for c in comparison.regressions] == ["unet onnxruntime cpu fp32 256x256 b4"]
    assert comparison.exit_code == 1


# -- runs over several machines ---------------------------------------------------------------------


def machine_run(directory: Path, gpu: str, seed: int, slower: dict | None = None) -> Path:
    """The grid measured on one machine with one GPU model (its own fingerprint)."""
    fingerprint = gpu.lower().replace(" ", "")[:12]
    rows = [
        {**row, "device": "cuda", "env": {**row["env"], "fingerprint": fingerprint, "host": gpu}}
        for row in grid(seed, slower)
    ]
    env = {**ENV, "fingerprint": fingerprint, "gpus": [{"name": gpu}]}
    return write_run(directory, rows, env=env)


def two_gpu_run(tmp_path: Path, name: str, seed: int, slower: dict | None = None) -> Path:
    from segbench.results.merge import merge_runs

    parts = [
        machine_run(tmp_path / f"{name}-a100", "NVIDIA A100", seed),
        machine_run(tmp_path / f"{name}-h100", "NVIDIA H100", seed + 1, slower),
    ]
    return merge_runs(parts, tmp_path / name).out_dir


def test_a_run_over_two_gpu_types_compares_per_type(tmp_path):
    base = load_run(two_gpu_run(tmp_path, "base", 1))
    slow = load_run(two_gpu_run(tmp_path, "slow", 20, slower={("fcn8s", "onnxruntime", 4): 1.3}))
    comparison = compare_runs(base, slow)
    # Eight cells per GPU type, matched within their type: the two types are never pooled or crossed.
    assert len(comparison.cells) == 16 and comparison.new_cells == comparison.missing_cells == []
    assert {c.cell["machine"] for c in comparison.cells} == {"NVIDIA A100", "NVIDIA H100"}
    assert [c.label for c in comparison.regressions] == [
        "fcn8s onnxruntime cuda fp32 256x256 b4 on NVIDIA H100"
    ]
    assert comparison.exit_code == 1


def test_one_machine_against_two_lists_the_other_type_as_new(tmp_path):
    base = load_run(machine_run(tmp_path / "one", "NVIDIA A100", 1))
    both = load_run(two_gpu_run(tmp_path, "both", 3))
    comparison = compare_runs(base, both)
    assert len(comparison.cells) == 8 and len(comparison.new_cells) == 8
    assert all(label.endswith("on NVIDIA H100") for label in comparison.new_cells)
    assert comparison.regressions == []
