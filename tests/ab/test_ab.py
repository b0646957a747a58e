"""segbench ab end to end on a tiny module: model in a temporary git repository: A/A exits 0, a head
commit whose model is several times slower is flagged (exit 1, the cell named), bad refs and grids that
differ are one line and exit 2, and the sides' run directories compare like any two runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from segbench.cli import main

NETS = """
import torch
from torch import nn

LAYERS = {layers}


def chain(classes: int = 4) -> nn.Module:
    convs = [nn.Conv2d(3, 32, 3, padding=1), nn.ReLU()]
    for _ in range(LAYERS):
        convs += [nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*convs, nn.Conv2d(32, classes, 1))
"""
CONFIG = """
name: ab-e2e
models:
  - {module: "nets:chain", name: chain, num_classes: 4}
backends:
  - {name: torch, device: cpu, precisions: [fp32]}
sweep: {input_sizes: [96x96], batch_sizes: [1]}
timing: {warmup: 2, iterations: 5, min_duration_s: 0.1, repeats: 2}
numerics: {enabled: false}
"""
# Six pairs: a burst that the sentinel catches takes two pairs out and leaves enough to decide; the bound
# is wider than the default so that a CI machine busy with other jobs does not leave the cells disturbed
# (the sentinel's judgement has its own tests). The A/A threshold leaves room for what differs between two
# processes of the same code on a shared 2-core VM.
PASSES = "6"
BOUND = "60%"


def git(repo: Path, *args: str) -> str:
    found = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return found.stdout.strip()


def make_repo(root: Path, layers: list[int]) -> Path:
    """A repository with one commit per entry of ``layers`` (the model's depth at that commit)."""
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "ab.yaml").write_text(CONFIG)
    for depth in layers:
        (repo / "nets.py").write_text(NETS.format(layers=depth))
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"{depth} layers")
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Base commit: 2 layers; head commit: 12 layers (several times slower)."""
    return make_repo(tmp_path_factory.mktemp("ab"), [2, 12])


def run_ab(repo: Path, out: Path, *args: str) -> int:
    return main(["ab", "ab.yaml", "--out", str(out), "--passes", PASSES, "--sentinel-bound", BOUND, *args])


@pytest.mark.slow
@pytest.mark.serial  # an A/A must find no change: another test on the same cores would be one
def test_a_a_exits_0_and_its_sides_are_ordinary_runs(repo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    out = tmp_path / "aa"
    # Both sides at the fast commit, each in its own worktree; the base through --base-python (here the
    # same interpreter: the path is what is tested).
    assert run_ab(repo, out, "--base", "HEAD~1", "--head", "HEAD~1", "--threshold", "20%",
                  "--base-python", sys.executable) == 0  # fmt: skip
    assert "no regressions" in capsys.readouterr().out
    result = json.loads((out / "comparison.json").read_text())
    assert result["summary"]["regressions"] == 0 and result["passes"] == 6
    assert result["sides"]["base"].endswith(sys.executable) and "HEAD~1" in result["sides"]["head"]
    record = json.loads((out / "ab.json").read_text())
    assert [entry["side"] for entry in record["schedule"]][:4] == ["base", "head", "head", "base"]
    assert len((out / "sentinel.jsonl").read_text().splitlines()) == 1 + 2 * 6  # before, after every pass
    for side in ("base", "head"):
        rows = [json.loads(line) for line in (out / side / "results.jsonl").read_text().splitlines()]
        assert sorted({row["repeat"] for row in rows}) == list(range(6))
        assert (out / side / "report.md").exists()
    # The sides are two ordinary runs: compare reads them, sentinel included ...
    assert main(["compare", str(out / "base"), str(out / "head"), "--threshold", "20%"]) in (0, 3)
    # ... and a run whose env.json names another CPU model gets no latency verdict.
    env_path = out / "head" / "env.json"
    env = json.loads(env_path.read_text())
    env_path.write_text(json.dumps({**env, "cpu": "Another CPU"}))
    capsys.readouterr()
    assert main(["compare", str(out / "base"), str(out / "head")]) == 3
    printed = capsys.readouterr().out
    assert "NO LATENCY VERDICT" in " ".join(printed.split()) and "Another CPU" in printed


@pytest.mark.slow
@pytest.mark.serial  # a latency verdict: another test on the same cores would be the noise it reports
def test_a_slower_head_is_flagged(repo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    out = tmp_path / "slow"
    assert run_ab(repo, out, "--base", "HEAD~1") == 1  # head: the working tree, at the slow commit
    markdown = (out / "comparison.md").read_text()
    assert "| chain torch cpu fp32 96x96 b1 |" in markdown and "REGRESSION" in markdown
    (cell,) = json.loads((out / "comparison.json").read_text())["cells"]
    assert cell["verdict"] == "regression" and cell["change"] > 1.0  # at least 2x slower
    assert "1 performance and 0 accuracy regression(s)" in " ".join(capsys.readouterr().out.split())


def test_bad_input_is_one_line_and_exit_2(repo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    assert run_ab(repo, tmp_path / "x", "--base", "no-such-branch") == 2
    assert capsys.readouterr().err.strip() == (
        f"segbench: error: unknown ref 'no-such-branch': not a commit of {repo.resolve()}"
    )
    assert run_ab(repo, tmp_path / "y") == 2  # no --base
    assert "give --base REF" in capsys.readouterr().err
    assert main(["ab", "ab.yaml", "--out", str(tmp_path / "z"), "--base", "HEAD", "--passes", "2"]) == 2
    assert "at least 3 passes" in capsys.readouterr().err
    assert run_ab(repo, tmp_path / "v", "--base", "HEAD", "--base-python", str(tmp_path / "no-python")) == 2
    assert "cannot start the base side with" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["ab", "ab.yaml", "--out", str(tmp_path / "w"), "--base", "HEAD"]) == 2
    assert "not inside a git repository" in capsys.readouterr().err


def test_a_grid_that_differs_between_the_sides_is_refused(tmp_path, monkeypatch, capsys):
    repo = make_repo(tmp_path, [2])
    (repo / "ab.yaml").write_text(CONFIG.replace("batch_sizes: [1]", "batch_sizes: [1, 2]"))
    monkeypatch.chdir(repo)
    assert run_ab(repo, tmp_path / "out", "--base", "HEAD") == 2
    assert "the config's sweep differ between base and head" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert git(repo, "worktree", "list").count("\n") == 0  # the base worktree was removed


@pytest.mark.slow
def test_a_side_that_dies_mid_way_is_a_failure_with_its_last_words(repo, tmp_path, monkeypatch, capsys):
    """A stand-in base side (given as --base-python) that gets ready, then dies at its first pass: ab stops
    with exit 1 and the side's last line, and removes its worktree."""
    dying = tmp_path / "dying-python"
    dying.write_text(
        '#!/bin/sh\necho \'{"ready": 0}\'\nread go\necho "RuntimeError: the side broke" >&2\nexit 1\n'
    )
    dying.chmod(0o755)
    monkeypatch.chdir(repo)
    assert run_ab(repo, tmp_path / "out", "--base", "HEAD~1", "--base-python", str(dying)) == 1
    error = capsys.readouterr().err
    assert "the base side" in error and "stopped: RuntimeError: the side broke" in error
    assert git(repo, "worktree", "list").count("\n") == 0


def test_a_config_the_base_commit_lacks_is_taken_from_the_head(tmp_path):
    from segbench.ab.session import Side, config_from_head_if_missing

    def side(name: str, config: Path) -> Side:
        tree = tmp_path / name
        return Side(name=name, ref=name, sha=None, tree=tree, cwd=tree, config=config, python=sys.executable,
                    out=tmp_path / "out" / name)  # fmt: skip

    moved = tmp_path / "head" / "examples" / "ci.yaml"  # moved into examples/ by the head commit
    moved.parent.mkdir(parents=True)
    moved.write_text(CONFIG)
    said: list[str] = []
    base = side("base", tmp_path / "base" / "examples" / "ci.yaml")
    assert config_from_head_if_missing(base, side("head", moved), said.append).config == moved
    assert said == [f"ci.yaml is not in the base side (base, {sys.executable}): the base runs the head's "
                    "copy"]
    # A base that has its own copy keeps it, and nothing is said.
    base.config.parent.mkdir(parents=True)
    base.config.write_text(CONFIG)
    assert config_from_head_if_missing(base, side("head", moved), said.append) is base and len(said) == 1
