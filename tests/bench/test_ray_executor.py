"""The Ray executor on a local single-node cluster started here with the machine's 2 CPUs: the same
cells and numerics verdicts as inline, a worker killed mid-cell failing its unit only, a driver killed
with SIGKILL and resumed, an unreachable cluster as one error line, and a merged run's report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster
ray = pytest.importorskip(
    "ray", reason="Ray is not installed (pip install -e '.[ray]'): no Ray executor tests"
)

from segbench.bench.pipeline import run_benchmark  # noqa: E402
from segbench.cli import PLUGINS_ENV, main  # noqa: E402
from segbench.results.jsonl import read_jsonl  # noqa: E402
from segbench.results.layout import CAPACITY_FILE, ENV_FILE, LOG_FILE, NUMERICS_FILE, RESULTS_FILE  # noqa: E402
from tests.fakes import fake_backend  # noqa: E402
from tests.fakes.configs import tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "tests.fakes.fake_backend_plugin"


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for the module; its workers import the fake backends (they inherit this
    environment through the raylet)."""
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", PLUGINS_ENV)}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved["PYTHONPATH"]]))
    os.environ[PLUGINS_ENV] = PLUGIN
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def fake():
    with fake_backend.registered():
        yield fake_backend.EVENTS


def cells(rows: list[dict]) -> Counter:
    return Counter((r["backend"], json.dumps(r["backend_options"], sort_keys=True), r["height"],
                    r["batch_size"], r["repeat"], r["status"]) for r in rows)  # fmt: skip


def verdicts(rows: list[dict]) -> dict:
    return {(r["backend"], r["role"], r["level"], r["metric"]): r["verdict"] for r in rows}


def test_ray_gives_the_same_cells_and_verdicts_as_inline(tmp_path, cluster, fake):
    backends = [{"name": "fake"}, {"name": "fake", "fail_batches": [2]}]
    sweep = {"input_sizes": ["32x32"], "batch_sizes": [1, 2, 3], "find_max_batch": True, "max_batch_limit": 8}
    config = tiny_config(backends, numerics=True, sweep=sweep)
    inline = run_benchmark(config, tmp_path / "inline")
    on_ray = run_benchmark(config.model_copy(update={"executor": "ray"}), tmp_path / "ray")
    rows_inline = read_jsonl(tmp_path / "inline" / RESULTS_FILE)
    rows_ray = read_jsonl(tmp_path / "ray" / RESULTS_FILE)
    assert cells(rows_ray) == cells(rows_inline) and sum(cells(rows_ray).values()) == 6
    assert {r["error"] for r in rows_ray if r["status"] != "ok"} == {"RuntimeError: fake failure at batch 2"}
    numerics_ray = read_jsonl(tmp_path / "ray" / NUMERICS_FILE)
    assert verdicts(numerics_ray) == verdicts(read_jsonl(tmp_path / "inline" / NUMERICS_FILE))
    assert sum(r["role"] == "baseline" for r in numerics_ray) == 3  # one baseline, on the driver
    assert on_ray.exit_code == inline.exit_code == 1
    # Every record names its node; env.json lists the node's environment.
    assert {r["env"]["host"] for r in rows_ray} == {os.uname().nodename}
    env = json.loads((tmp_path / "ray" / ENV_FILE).read_text())
    assert [n["fingerprint"] for n in env["nodes"]] == [rows_ray[0]["env"]["fingerprint"]]
    assert "fake failure at batch 2" in (tmp_path / "ray" / LOG_FILE).read_text()  # the worker's traceback
    # The batch search is a hardware measurement: it runs on the worker that times the cells, and its
    # rows carry that worker's host and fingerprint (the driver's own rows name no host).
    capacity_ray = read_jsonl(tmp_path / "ray" / CAPACITY_FILE)
    capacity_inline = read_jsonl(tmp_path / "inline" / CAPACITY_FILE)
    assert [r["max_batch"] for r in capacity_ray] == [r["max_batch"] for r in capacity_inline] == [8, 8]
    assert {(r["env"]["host"], r["env"]["fingerprint"]) for r in capacity_ray} == {
        (os.uname().nodename, env["nodes"][0]["fingerprint"])
    }
    assert {r["env"].get("host") for r in capacity_inline} == {None}


def test_a_worker_killed_mid_cell_fails_its_unit_only(tmp_path, cluster, fake):
    backends = [{"name": "fake", "crash_batches": [2]}, {"name": "fake"}]
    config = tiny_config(backends, executor={"kind": "ray", "retries": 1})
    summary = run_benchmark(config, tmp_path)
    rows = read_jsonl(tmp_path / RESULTS_FILE)
    by_unit = {}
    for row in rows:
        by_unit.setdefault(bool(row["backend_options"].get("crash_batches")), {})[row["batch_size"]] = row
    assert {b: r["status"] for b, r in by_unit[False].items()} == {1: "ok", 2: "ok", 3: "ok"}
    crashed = by_unit[True]
    assert {b: r["status"] for b, r in crashed.items()} == {1: "ok", 2: "crashed", 3: "crashed"}
    assert crashed[2]["error"].startswith("the Ray worker died: WorkerCrashedError")
    assert len(rows) == 6 and summary.exit_code == 1
    # One retry of the two unfinished cells (the worker died again): said in the log.
    assert (tmp_path / LOG_FILE).read_text().count("the Ray task stopped") == 2


def test_a_killed_driver_resumes_with_every_cell_once(tmp_path, cluster):
    config = {
        "name": "killed",
        "models": [{"name": "unet", "options": {"base_channels": 4}}],
        "backends": [{"name": "fake"}, {"name": "fake", "fail_batches": [9]}],
        "sweep": {"input_sizes": ["32x32"], "batch_sizes": [1, 2, 3, 4]},
        "timing": {"warmup": 0, "iterations": 2, "min_duration_s": 1.0},
        "numerics": {"enabled": False},
        "executor": {"kind": "ray"},
    }
    path, out = tmp_path / "killed.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(config))
    argv = [sys.executable, "-m", "segbench", "run", str(path), "--out", str(out), "--no-report",
            "--address", cluster]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), PLUGINS_ENV: PLUGIN}
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = out / RESULTS_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    written = len(read_jsonl(results))
    assert driver.returncode == -signal.SIGKILL and 1 <= written < 8, driver.stderr.read().decode()[-2000:]
    resumed = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    counts = cells(read_jsonl(results))
    assert sum(counts.values()) == 8 and set(counts.values()) == {1}
    assert {key[-1] for key in counts} == {"ok"}


def test_an_unreachable_cluster_is_one_line_and_exit_2(tmp_path, cluster, capsys, monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as a fresh driver process would be
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "unet"}], "backends": [{"name": "torch"}]}))
    code = main(["run", str(path), "--out", str(tmp_path / "run"), "--executor", "ray",
                 "--address", "127.0.0.1:1"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("segbench: error: executor ray: cannot reach the Ray cluster at 127.0.0.1:1")
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_ray_run_merged_with_another_machine_reports_as_one(tmp_path, cluster, fake):
    config = tiny_config(numerics=True, executor={"kind": "ray"})
    run_benchmark(config, tmp_path / "a")
    other = tmp_path / "b"  # the same config on "another machine": its fingerprint and host rewritten
    other.mkdir()
    for name in (RESULTS_FILE, NUMERICS_FILE):
        rows = read_jsonl(tmp_path / "a" / name)
        for row in rows:
            if "env" in row:
                row["env"] = {**row["env"], "fingerprint": "otherfinger1", "host": "node-b"}
        (other / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    env = json.loads((tmp_path / "a" / ENV_FILE).read_text())
    (other / ENV_FILE).write_text(json.dumps({**env, "fingerprint": "otherfinger1", "nodes": []}))
    assert main(["merge", str(tmp_path / "a"), str(other), "--out", str(tmp_path / "merged")]) == 0
    merged = read_jsonl(tmp_path / "merged" / RESULTS_FILE)
    assert len(merged) == 6 and {r["env"]["host"] for r in merged} == {os.uname().nodename, "node-b"}
    assert main(["report", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "report.md").exists()


def test_the_executor_setting_as_a_name_or_a_mapping(tmp_path, capsys):
    from segbench.bench.executors import executor_name, executor_settings
    from segbench.config import validate_config
    from segbench.errors import ConfigError

    base = {"models": [{"name": "unet"}], "backends": [{"name": "torch"}]}
    assert executor_name(validate_config({**base, "executor": "ray"})) == "ray"
    settings = executor_settings(validate_config({**base, "executor": {"kind": "ray", "num_gpus": 0.5}}))
    assert (settings.kind, settings.num_gpus, settings.retries) == ("ray", 0.5, 0)
    with pytest.raises(ConfigError, match="executor: bogus: unknown key"):
        validate_config({**base, "executor": {"kind": "ray", "bogus": 1}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base))
    assert main(["run", str(path), "--address", "auto", "--dry-run"]) == 2
    assert "--address needs --executor ray" in capsys.readouterr().err
