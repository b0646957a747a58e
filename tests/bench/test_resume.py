"""``segbench run --resume`` after a kill -9: finished cells are kept as written, the rest run once."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from segbench.cli import main
from segbench.results.jsonl import read_jsonl, truncate_torn_tail
from segbench.results.layout import ENV_FILE, NUMERICS_FILE, RESULTS_FILE

CONFIG = {
    "name": "resumable",
    "models": [{"name": "unet", "options": {"base_channels": 4}}],
    "backends": [{"name": "torch"}, {"name": "onnxruntime", "exporter": "torchscript"}],
    "sweep": {"input_sizes": ["64x64", "96x96"], "batch_sizes": [1, 2]},
    "timing": {"warmup": 1, "iterations": 150},
    "numerics": {"batch_size": 2, "dataset": {"kind": "shapes", "num_images": 4, "height": 64, "width": 64}},
}
CELLS = 8  # 2 backends x 2 sizes x 2 batch sizes


def cell_key(row):
    return row["backend"], row["height"], row["width"], row["batch_size"]


@pytest.mark.slow
def test_a_killed_run_resumes_without_losing_or_repeating_a_cell(tmp_path):
    config, out = tmp_path / "bench.yaml", tmp_path / "out"
    config.write_text(yaml.safe_dump(CONFIG))
    process = subprocess.Popen(
        [sys.executable, "-m", "segbench", "run", str(config), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = out / RESULTS_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 2:
            break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = results.read_text().splitlines()
    assert 2 <= len(before) < CELLS, "the run should have been killed half-way"
    with results.open("a") as handle:  # as if the kill had landed in the middle of a write
        handle.write('{"model": "unet", "backend": "tor')

    assert main(["run", str(config), "--out", str(out), "--resume"]) == 0
    after = read_jsonl(results)
    assert results.read_text().splitlines()[: len(before)] == before  # finished cells untouched
    keys = [cell_key(row) for row in after]
    assert len(keys) == CELLS and len(set(keys)) == CELLS and all(row["status"] == "ok" for row in after)
    numerics = read_jsonl(out / NUMERICS_FILE)
    assert sum(row["role"] == "baseline" for row in numerics) == 3  # written once, not per session
    assert {row["level"] for row in numerics if row["role"] == "candidate"} == {"task", "tensor"}
    assert len(json.loads((out / ENV_FILE).read_text())["resumed"]) == 1

    # Resuming a finished run does nothing more.
    assert main(["run", str(config), "--out", str(out), "--resume"]) == 0
    assert len(read_jsonl(results)) == CELLS and len(read_jsonl(out / NUMERICS_FILE)) == len(numerics)


def test_resume_refuses_a_changed_config_and_plain_reruns(tmp_path, capsys):
    config, out = tmp_path / "bench.yaml", tmp_path / "out"
    small = {
        **CONFIG,
        "backends": [{"name": "torch"}],
        "sweep": {"input_sizes": ["32x32"], "batch_sizes": [1]},
        "timing": {"warmup": 0, "iterations": 2},
    }
    config.write_text(yaml.safe_dump(small))
    assert main(["run", str(config), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out)]) == 2
    assert "(or --resume to finish that run)" in capsys.readouterr().err
    config.write_text(yaml.safe_dump({**small, "timing": {"warmup": 0, "iterations": 3}}))
    assert main(["run", str(config), "--out", str(out), "--resume"]) == 2
    assert "the config changed since that run" in capsys.readouterr().err
    assert main(["run", str(config), "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err


def test_truncate_torn_tail(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}\n{"c":')
    assert truncate_torn_tail(path) and path.read_text() == '{"a": 1}\n{"b": 2}\n'
    assert not truncate_torn_tail(path)
