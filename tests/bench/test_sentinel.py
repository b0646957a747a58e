"""The noise sentinel: its reading, the readings a run takes around its passes, and the gated pipeline
that segbench ab's sides run (exports and numerics first, then one pass per gate)."""

from __future__ import annotations

import itertools

import pytest

from segbench.bench.pipeline import run_benchmark
from segbench.bench.sentinel import Sentinel, sentinel_devices
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import NUMERICS_FILE, RESULTS_FILE, SENTINEL_FILE
from segbench.results.records import SentinelReading
from tests.fakes import fake_backend
from tests.fakes.configs import tiny_config


@pytest.fixture(autouse=True)
def fake():
    with fake_backend.registered():
        yield


def make_config(repeats: int, numerics: bool = False) -> object:
    return tiny_config(numerics=numerics, timing={"warmup": 0, "iterations": 2, "repeats": repeats})


def test_a_reading_times_the_fixed_workload():
    sentinel = Sentinel("cpu", samples=5)
    reading = sentinel.read("before pass 1", 0)
    assert len(reading.samples_ms) == 5 and min(reading.samples_ms) > 0
    assert reading.median_ms == sorted(reading.samples_ms)[2]
    assert reading.workload.startswith("fp32 matmul") and reading.device == "cpu" and reading.repeat == 0
    assert SentinelReading.from_dict(reading.to_dict()) == reading
    with pytest.raises(ValueError, match="no sentinel workload"):
        Sentinel("mps")
    assert sentinel_devices({"cpu"}) == ["cpu"]


@pytest.mark.slow
def test_a_run_reads_the_sentinel_before_each_pass_and_after_the_last(tmp_path):
    config = make_config(repeats=3)
    run_benchmark(config, tmp_path)
    rows = read_jsonl(tmp_path / SENTINEL_FILE)
    assert [(r["label"], r["repeat"]) for r in rows] == [
        ("before pass 1", 0), ("before pass 2", 1), ("before pass 3", 2), ("after pass 3", None)
    ]  # fmt: skip
    cells = read_jsonl(tmp_path / RESULTS_FILE)
    assert [r["repeat"] for r in cells] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(a["time"] < b["time"] for a, b in itertools.pairwise(rows))


@pytest.mark.slow
def test_a_gated_run_checks_first_then_times_a_pass_per_gate(tmp_path):
    config = make_config(repeats=2, numerics=True)
    seen = []

    def gate(repeat):
        cells = read_jsonl(tmp_path / RESULTS_FILE)
        seen.append((repeat, len(cells), len(read_jsonl(tmp_path / NUMERICS_FILE)) > 0))

    run_benchmark(config, tmp_path, gate=gate)
    # Pass 0 waits until the numerics check is written and nothing is timed; each gate then finds the
    # previous pass's three cells; the last call (None) comes after every pass.
    assert seen == [(0, 0, True), (1, 3, True), (None, 6, True)]
    assert read_jsonl(tmp_path / SENTINEL_FILE) == []  # the gate's holder reads the sentinel


@pytest.mark.slow
def test_an_isolated_child_takes_its_parents_peak_instead_of_measuring_again(tmp_path, monkeypatch):
    import json

    from segbench.bench.peak import PEAKS_ENV

    monkeypatch.setenv(PEAKS_ENV, json.dumps({"cpu": {"fp32": 1.5}}))
    run_benchmark(make_config(repeats=1), tmp_path)
    assert json.loads((tmp_path / "env.json").read_text())["peak_tflops"] == {"cpu": {"fp32": 1.5}}
    assert {row["peak_fraction"] > 0 for row in read_jsonl(tmp_path / RESULTS_FILE)} <= {True}
