"""Bad input: one line naming the problem, exit code 2, never a traceback."""

import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml

from segbench.cli import main
from segbench.models.registry import MODELS

GOOD = {"models": [{"name": "unet", "options": {"base_channels": 4}}], "backends": [{"name": "torch"}]}


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err.strip()


def write(tmp_path, data, name="b.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("models: [unet\n", "malformed YAML at line"),
        ({**GOOD, "extra": 1}, "extra: unknown key"),
        (
            {**GOOD, "models": [{"name": "segformer"}]},
            "unknown model 'segformer'; valid models: fcn32s, fcn16s",
        ),
        ({**GOOD, "backends": [{"name": "tvm"}]}, "unknown backend 'tvm'; valid: torch, onnxruntime"),
        ({**GOOD, "sweep": {"input_sizes": [0]}}, "input size must be positive"),
        ({**GOOD, "sweep": {"batch_sizes": [0]}}, "batch sizes must be positive"),
        ({**GOOD, "models": [{"name": "unet", "weights": "missing.safetensors"}]}, "weights file not found"),
    ],
)
def test_bad_config(tmp_path, capsys, config, message):
    code, err = run_cli(capsys, "run", write(tmp_path, config), "--out", str(tmp_path / "out"))
    assert code == 2
    assert err.startswith("segbench: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.mark.filterwarnings("error")
def test_unreadable_weights(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"\x80\x04garbage")
    config = {**GOOD, "models": [{"name": "unet", "weights": str(weights)}]}
    code, err = run_cli(capsys, "run", write(tmp_path, config))
    assert code == 2 and f"cannot read weights file {weights}" in err
    assert len(err.splitlines()) == 1


def test_missing_config(tmp_path, capsys):
    code, err = run_cli(capsys, "run", str(tmp_path / "nope.yaml"))
    assert code == 2 and err == f"segbench: error: config file not found: {tmp_path / 'nope.yaml'}"


def test_filters_name_unknown_models_and_backends(tmp_path, capsys):
    config = write(tmp_path, GOOD)
    code, err = run_cli(capsys, "run", config, "--models", "fcn99")
    assert code == 2 and "unknown model 'fcn99'; valid models:" in err
    code, err = run_cli(capsys, "run", config, "--models", "fcn8s")
    assert code == 2 and "fcn8s is not in the config (it has: unet)" in err
    code, err = run_cli(capsys, "run", config, "--backends", "openvino")
    assert code == 2 and "unknown backend 'openvino'; valid backends: torch, onnxruntime, tensorrt" in err
    code, err = run_cli(capsys, "run", config, "--backends", "tensorrt")
    assert code == 2 and "--backends: tensorrt is not in the config (it has: torch)" in err


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["models", "--size", "12xq"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid input size" in err


def test_data_command_rejects_bad_sizes(tmp_path, capsys):
    code, err = run_cli(capsys, "data", "--out", str(tmp_path / "d"), "--size", "16x16")
    assert code == 2 and "at least 32x32" in err


def test_data_command_writes_a_dataset(tmp_path, capsys):
    code, _ = run_cli(capsys, "data", "--out", str(tmp_path / "d"), "--num", "2", "--size", "64x48")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "d" / "images").iterdir()) == ["000000.png", "000001.png"]
    assert (tmp_path / "d" / "instances.json").is_file() and (tmp_path / "d" / "panoptic.json").is_file()


@pytest.mark.slow
def test_models_command_lists_the_registry(capsys):
    assert main(["models", "--size", "256x256"]) == 0
    out = capsys.readouterr().out
    for name in MODELS:
        assert name in out


def shipped_checkpoint(name: str) -> bool:
    from segbench.models.weights import trained_checkpoint_path

    return trained_checkpoint_path(name).is_file()


# The library families and SegNet ship no trained weights, except those the README names.
WITHOUT_CHECKPOINT = {name for name in MODELS if not shipped_checkpoint(name)}


@pytest.mark.slow
def test_models_json_lists_every_model_with_its_checkpoint(capsys):
    assert main(["models", "--json", "--size", "256x256"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["size"] == [256, 256]
    assert [entry["name"] for entry in data["models"]] == list(MODELS)
    for entry in data["models"]:
        assert entry["task"] == MODELS[entry["name"]].task and entry["params"] > 0 and "gflops" in entry
        shipped = entry["checkpoint"]
        if entry["name"] in WITHOUT_CHECKPOINT:
            assert shipped is None
            continue
        assert shipped is not None and shipped["weights"] == "trained"
        assert shipped["path"].endswith(f"{entry['name']}.safetensors") and shipped["params"] > 0
        assert shipped["validation"] and shipped["validation_headline"]
    by_name = {entry["name"]: entry for entry in data["models"]}
    # The figures the table and the README quote: unet's shipped checkpoint, mIoU 76.2 at 0.49 M params.
    assert by_name["unet"]["checkpoint"]["validation"]["miou"] == pytest.approx(0.762, abs=5e-4)
    assert round(by_name["unet"]["checkpoint"]["params"] / 1e6, 2) == 0.49
    assert by_name["unet"]["gflops"] > by_name["unet"]["checkpoint"]["gflops"] > 0
    assert by_name["mask_rcnn"]["checkpoint"]["validation"]["size"] == [128, 128]


@pytest.mark.slow
def test_models_piped_keeps_every_name_whole():
    # Piped, rich lays tables out for 80 columns; `segbench models | grep mask_rcnn` must find them.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    # At the other tests' size: its counts are in the shared cache when they ran first, cheaper if not.
    command = f"{shlex.quote(sys.executable)} -m segbench models --size 256x256 | cat"
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 80
    assert "…" not in proc.stdout
    for name in MODELS:
        rows = [line.split() for line in lines if line.startswith(f"{name} ")]
        variants = ["random"] if name in WITHOUT_CHECKPOINT else ["random", "trained"]
        assert [row[2] for row in rows] == variants, name  # grep finds every variant


@pytest.mark.slow
def test_real_process_prints_no_traceback(tmp_path):
    config = write(tmp_path, {**GOOD, "backends": [{"name": "tvm"}]})
    proc = subprocess.run([sys.executable, "-m", "segbench", "run", config], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("segbench: error:")


def test_env_command_prints_the_fingerprint(capsys):
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert len(env["fingerprint"]) == 12 and env["cpu_cores_logical"] >= 1 and "torch" in env["packages"]
    assert main(["env"]) == 0
    assert env["fingerprint"] in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [["run", "benchmark.yaml"], ["check", "benchmark.yaml"], ["bench", "model.onnx"], ["export", "unet"],
     ["data"], ["merge", "a", "b"], ["report", "a"], ["ab", "benchmark.yaml", "--base", "HEAD"]],
    ids=lambda argv: argv[0],
)  # fmt: skip
def test_an_output_directory_that_cannot_exist_is_one_line_and_exit_2(tmp_path, capsys, argv):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main([*argv, "--out", str(blocker / "run")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"segbench: error: --out {blocker / 'run'}: cannot create the directory (")
    assert main([*argv, "--out", str(blocker)]) == 2
    expected = f"segbench: error: --out {blocker}: exists and is not a directory"
    assert capsys.readouterr().err.strip() == expected
