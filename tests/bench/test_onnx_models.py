"""Any ONNX file: ``onnx:`` model entries and ``segbench bench``, on graphs segbench did not write."""

from __future__ import annotations

import torch
from torch import nn

from segbench.cli import main
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import NUMERICS_FILE, RESULTS_FILE
from tests.fakes.configs import tiny_config_data, write_config
from tests.fakes.user_nets import tiny


def export(path, network: nn.Module, inputs=None, dynamic: bool = True, input_names=("input",)):
    inputs = inputs if inputs is not None else (torch.rand(1, 3, 32, 32),)
    axes = {"input": {0: "n", 2: "h", 3: "w"}} if dynamic else None
    torch.onnx.export(network.eval(), inputs, str(path), input_names=list(input_names),
                      output_names=["output"], dynamic_axes=axes, dynamo=False)  # fmt: skip
    return path


def test_segbench_bench_times_a_foreign_graph_on_its_own_names(tmp_path):
    graph = export(tmp_path / "mine.onnx", tiny())
    out = tmp_path / "out"
    argv = [
        "bench",
        str(graph),
        "--sizes",
        "32x32,48x64",
        "--batch-sizes",
        "1,2",
        "--out",
        str(out),
        "--no-report",
    ]
    assert main(argv) == 0
    cells = read_jsonl(out / RESULTS_FILE)
    assert [(c["model"], c["backend"], c["height"], c["batch_size"], c["status"]) for c in cells] == [
        ("mine", "onnxruntime", h, b, "ok") for h in (32, 48) for b in (1, 2)
    ]
    assert cells[0]["artifact"] == {"path": str(graph), "onnx_model": True}
    assert cells[0]["params"] == 8 * 3 * 9 + 8 + 6 * 8 + 6
    assert not (out / NUMERICS_FILE).exists() or read_jsonl(out / NUMERICS_FILE) == []  # nothing to compare


def config(tmp_path, model: dict, backends: list[dict]) -> str:
    numerics = {"batch_size": 2, "dataset": {"kind": "shapes", "num_images": 4, "height": 32, "width": 32}}
    data = tiny_config_data(backends, numerics, name="onnx", models=[model],
                            sweep={"input_sizes": ["32x32"], "batch_sizes": [1, 2]})  # fmt: skip
    return str(write_config(tmp_path, data))


def test_an_onnx_entry_is_checked_against_onnxruntime_on_the_cpu(tmp_path, capsys):
    graph = export(tmp_path / "mine.onnx", tiny())
    backends = [{"name": "torch"}, {"name": "onnxruntime", "precisions": ["fp32", "fp16"]},
                {"name": "onnxruntime", "graph_optimization_level": "disable"}]  # fmt: skip
    out = tmp_path / "out"
    model = {"onnx": str(graph), "task": "semantic", "num_classes": 6}
    assert main(["run", config(tmp_path, model, backends), "--out", str(out), "--no-report"]) == 0
    cells = read_jsonl(out / RESULTS_FILE)
    # torch cannot run a file; the fp32 graph does not run at fp16: both skipped, not failed.
    assert {(c["backend"], c["precision"], json_options(c)) for c in cells} == {
        ("onnxruntime", "fp32", "{}"), ("onnxruntime", "fp32", '{"graph_optimization_level": "disable"}')
    }  # fmt: skip
    rows = read_jsonl(out / NUMERICS_FILE)
    baseline = [r for r in rows if r["role"] == "baseline"]
    assert baseline and all(r["backend"] == "onnxruntime" for r in baseline)
    checks = [r for r in rows if r["role"] == "candidate"]
    assert {r["metric"] for r in checks if r["level"] == "task"} == {"miou", "pixel_accuracy", "mean_dice"}
    assert all(r["verdict"] == "pass" and r["backend_options"] for r in checks)
    assert main(["run", config(tmp_path, model, backends), "--dry-run"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "mine.onnx is an ONNX file: it runs on graph backends" in printed
    assert "mine.onnx is an fp32 graph: it runs at fp32 only" in printed


def json_options(cell) -> str:
    import json

    return json.dumps(cell["backend_options"], sort_keys=True)


def test_task_none_times_random_inputs_of_the_graphs_type_and_checks_tensors(tmp_path):
    class Scale(nn.Module):
        def forward(self, x):
            return (x.float() * 0.5).sum(dim=1, keepdim=True)

    graph = export(tmp_path / "ints.onnx", Scale(), (torch.zeros(1, 3, 32, 32, dtype=torch.int64),))
    backends = [{"name": "onnxruntime"}, {"name": "onnxruntime", "graph_optimization_level": "basic"}]
    out = tmp_path / "out"
    assert (
        main(["run", config(tmp_path, {"onnx": str(graph)}, backends), "--out", str(out), "--no-report"]) == 0
    )
    rows = [r for r in read_jsonl(out / NUMERICS_FILE) if r["role"] == "candidate"]
    assert [(r["level"], r["verdict"]) for r in rows] == [("tensor", "pass")]


def test_graphs_segbench_cannot_feed_are_bad_input(tmp_path, capsys):
    class Two(nn.Module):
        def forward(self, a, b):
            return a + b

    pair = (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    two = export(tmp_path / "two.onnx", Two(), pair, dynamic=False, input_names=("a", "b"))
    assert main(["bench", str(two), "--out", str(tmp_path / "o1")]) == 2
    assert "two.onnx has 2 inputs (a, b): segbench feeds one image tensor" in capsys.readouterr().err
    static = export(tmp_path / "static.onnx", tiny(), dynamic=False)
    assert main(["bench", str(static), "--sizes", "64x64", "--out", str(tmp_path / "o2")]) == 2
    assert "static.onnx takes 32x32 only" in capsys.readouterr().err
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08 not a graph")
    assert main(["bench", str(broken)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 2
    assert "ONNX file not found" in capsys.readouterr().err
