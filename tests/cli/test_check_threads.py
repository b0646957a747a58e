"""The same check gives the same verdicts on one CPU thread and on two (``taskset -c 0`` vs none)."""

import json
import os
import subprocess
import sys

import pytest

from segbench.results.jsonl import read_jsonl
from segbench.results.layout import NUMERICS_FILE

pytestmark = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to compare one thread with two"
)


def check_on(cpus: set[int], out) -> tuple[int, dict]:
    argv = [sys.executable, "-m", "segbench.cli", "check", "--model", "mask_rcnn", "--weights", "trained",
            "--backend", "onnxruntime", "--images", "8", "--max-images", "32", "--size", "128x128",
            "--out", str(out)]  # fmt: skip
    # Like taskset: the child and the thread pools torch and onnxruntime size from it see these CPUs only.
    done = subprocess.run(
        argv, preexec_fn=lambda: os.sched_setaffinity(0, cpus), capture_output=True, text=True
    )
    assert done.returncode in (0, 1, 3), done.stderr
    return done.returncode, json.loads((out / "env.json").read_text())


def verdicts(out) -> dict:
    return {
        (row["metric"], row["level"]): (row["verdict"], row.get("images"))
        for row in read_jsonl(out / NUMERICS_FILE)
        if row["role"] == "candidate"
    }


@pytest.mark.slow
def test_instance_check_verdicts_do_not_depend_on_the_thread_count(tmp_path, shared_export_cache):
    # The children inherit the shared export cache: the trained graph is exported once, by the first
    # child or by tests/cli/test_check.py before it; the check under test is the same either way.
    one_code, one_env = check_on({0}, tmp_path / "one")
    two_code, two_env = check_on(set(os.sched_getaffinity(0)), tmp_path / "two")
    assert one_env["torch_threads"] == 1 and two_env["torch_threads"] >= 2  # the runs really differed
    assert verdicts(tmp_path / "one") == verdicts(tmp_path / "two")
    assert one_code == two_code
    # The untouched graph passes at both levels (tests/cli/test_check.py fails perturbed copies of it).
    assert one_code == 0 and {verdict for verdict, _ in verdicts(tmp_path / "one").values()} == {"pass"}
    assert {level for _, level in verdicts(tmp_path / "one")} == {"task", "tensor"}
