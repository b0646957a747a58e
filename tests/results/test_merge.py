"""segbench merge: runs of one config from separate machines joined into one run, refused when their
configs differ or a cell was measured twice on one machine; the merged run reports like any other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segbench.cli import main
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import ENV_FILE, NUMERICS_FILE, RESULTS_FILE
from segbench.results.merge import MergeError, merge_runs
from tests.fakes.runs import ENV, cell, check, write_run


def machine(directory: Path, fingerprint: str, cpu: str, **env) -> Path:
    rows = [
        {**cell(backend=b, batch=n), "env": {"fingerprint": fingerprint, "config_hash": "c0ffee"}}
        for b in ("torch", "onnxruntime")
        for n in (1, 4)
    ]
    checks = [check(), check(backend="torch", role="baseline")]
    return write_run(directory, rows, checks, env={**ENV, "fingerprint": fingerprint, "cpu": cpu, **env})


def test_two_machines_merge_into_one_run_that_reports(tmp_path, capsys):
    a = machine(tmp_path / "a", "aaaaaaaaaaaa", "CPU A")
    b = machine(tmp_path / "b", "bbbbbbbbbbbb", "CPU B")
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 0
    assert "merged 2 runs" in capsys.readouterr().out
    rows = read_jsonl(tmp_path / "m" / RESULTS_FILE)
    assert len(rows) == 8 and {r["env"]["fingerprint"] for r in rows} == {"aaaaaaaaaaaa", "bbbbbbbbbbbb"}
    checks = read_jsonl(tmp_path / "m" / NUMERICS_FILE)
    # A numerics row names its part's environment, so two machines' checks stay apart.
    assert sorted(r["env"]["fingerprint"] for r in checks) == ["aaaaaaaaaaaa"] * 2 + ["bbbbbbbbbbbb"] * 2
    env = json.loads((tmp_path / "m" / ENV_FILE).read_text())
    assert env["config_hash"] == "c0ffee" and "fingerprint" not in env and "cpu" not in env
    assert [p["cpu"] for p in env["parts"]] == ["CPU A", "CPU B"]
    assert env["merged_from"] == [str(a), str(b)]
    assert main(["report", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "report.md").is_file()


def test_runs_of_different_configs_are_refused_in_one_line(tmp_path, capsys):
    a = machine(tmp_path / "a", "aaaaaaaaaaaa", "CPU A")
    b = machine(tmp_path / "b", "bbbbbbbbbbbb", "CPU B", config_hash="beef")
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the runs' configs differ" in err[0]
    assert not (tmp_path / "m").exists()


def test_a_cell_measured_twice_on_one_machine_is_refused(tmp_path):
    a = machine(tmp_path / "a", "aaaaaaaaaaaa", "CPU A")
    again = machine(tmp_path / "again", "aaaaaaaaaaaa", "CPU A")
    with pytest.raises(MergeError, match=r"duplicate cell unet torch/cpu/fp32 .* in both"):
        merge_runs([a, again], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_merge_needs_two_runs_and_a_fresh_output(tmp_path):
    a = machine(tmp_path / "a", "aaaaaaaaaaaa", "CPU A")
    b = machine(tmp_path / "b", "bbbbbbbbbbbb", "CPU B")
    with pytest.raises(MergeError, match="at least two"):
        merge_runs([a], tmp_path / "m")
    with pytest.raises(MergeError, match="already exists"):
        merge_runs([a, b], a)
    with pytest.raises(MergeError, match="no such run directory"):
        merge_runs([a, tmp_path / "missing"], tmp_path / "m")
