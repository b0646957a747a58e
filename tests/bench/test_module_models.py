"""``module:`` entries: any torch module by import path runs through the same export, timing and
numerics as a registered model, and a bad one is bad input (exit 2, one line)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segbench.cli import main
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import NUMERICS_FILE, RESULTS_FILE

NETS = "tests.fakes.user_nets"


def write(tmp_path, model: dict, backends=({"name": "torch"}, {"name": "onnxruntime"})) -> str:
    data = {
        "name": "module",
        "models": [model],
        "backends": list(backends),
        "sweep": {"input_sizes": ["36x52"], "batch_sizes": [1, 2]},
        "timing": {"warmup": 0, "iterations": 2},
        "numerics": {
            "batch_size": 2,
            "dataset": {"kind": "shapes", "num_images": 4, "height": 36, "width": 52},
        },
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.slow
def test_a_module_entry_is_exported_timed_and_checked(tmp_path):
    model = {"module": NETS + ":tiny", "options": {"divisor": 8, "as_dict": True},
             "num_classes": 6, "preprocess": {"size_divisor": 8, "channel_order": "bgr"}}  # fmt: skip
    out = tmp_path / "out"
    assert main(["run", write(tmp_path, model), "--out", str(out), "--no-report"]) == 0
    cells = read_jsonl(out / RESULTS_FILE)
    assert [(c["model"], c["backend"], c["status"]) for c in cells] == [
        ("tiny", backend, "ok") for backend in ("torch", "torch", "onnxruntime", "onnxruntime")
    ]
    # Padded to 40x56 for the network, cropped back: the graph takes the odd size, parity holds.
    assert all(p["passed"] for p in cells[2]["artifact"]["parity"])
    assert cells[0]["params"] == 8 * 3 * 9 + 8 + 6 * 8 + 6 and cells[0]["gflops"] > 0
    checks = [r for r in read_jsonl(out / NUMERICS_FILE) if r["role"] == "candidate"]
    assert {r["metric"] for r in checks if r["level"] == "task"} == {"miou", "pixel_accuracy", "mean_dice"}
    assert all(r["verdict"] == "pass" for r in checks)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"module": "tests.fakes.no_such_module:tiny"}, "cannot import tests.fakes.no_such_module"),
        ({"module": NETS + ":missing"}, "module: tests.fakes.user_nets has no missing"),
        ({"module": NETS + ":NOT_CALLABLE"}, "is not callable"),
        ({"module": NETS + ""}, "expected 'package.module:factory'"),
        ({"module": NETS + ":flat", "num_classes": 6}, "returned shape [1, 6] for a 1x3x64x80 input"),
        ({"module": NETS + ":tiny", "options": {"divisor": 32}}, "fails on a 1x3x64x80 input"),
        ({"module": NETS + ":tiny", "num_classes": 4}, "must return [N, num_classes=4, H, W]"),
        ({"module": NETS + ":tiny", "task": "instance"}, "task: Input should be 'semantic'"),
        ({"module": NETS + ":tiny", "options": {"depth": 3}}, "tiny(**options) failed"),
        ({"module": NETS + ":tiny", "name": "unet"}, "unet is a registered model"),
        ({"name": "unet", "num_classes": 3}, "num_classes: only for a module: or onnx: entry"),
    ],
)  # fmt: skip
def test_a_bad_module_entry_is_one_line_and_exit_2(tmp_path, capsys, model, message):
    out = tmp_path / "out"
    assert main(["run", write(tmp_path, model, [{"name": "torch"}]), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


@pytest.mark.slow
def test_a_graph_that_bakes_its_size_is_exported_per_size(tmp_path, capsys):
    model = {"module": NETS + ":baked", "num_classes": 6}
    backends = [{"name": "onnxruntime", "exporter": "torchscript"}]
    out = tmp_path / "out"
    path = write(tmp_path, model, backends)
    data = yaml.safe_load(Path(path).read_text())
    data["sweep"]["input_sizes"] = ["32x32", "48x64"]
    Path(path).write_text(yaml.safe_dump(data))
    assert main(["run", path, "--out", str(out), "--no-report"]) == 0
    cells = read_jsonl(out / RESULTS_FILE)
    assert all(c["status"] == "ok" for c in cells)
    # One static graph per size, each passing parity at its own size.
    assert {tuple(c["artifact"]["static_size"]) for c in cells} == {(32, 32), (48, 64)}
    assert "exporting one graph per input size" in " ".join(capsys.readouterr().out.split())
