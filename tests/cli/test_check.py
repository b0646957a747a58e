"""``segbench check`` catches a broken backend: a pre-exported graph with one convolution's weights
slightly perturbed, or two output channels swapped, fails; the untouched graph passes."""

import json

import numpy as np
import onnx
import pytest
import yaml
from onnx import numpy_helper

from segbench.cli import main
from segbench.export.artifacts import ExportRequest, cached_export
from segbench.models import build_model
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import NUMERICS_FILE

# These tests are about exporting and caching: each starts from an empty export cache.
pytestmark = pytest.mark.fresh_export_cache


def convolutions(graph: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.TensorProto]]:
    weights = {init.name: init for init in graph.graph.initializer}
    return [
        (n, weights[n.input[1]]) for n in graph.graph.node if n.op_type == "Conv" and n.input[1] in weights
    ]


def perturbed(src, dst, kind):
    """``noise``: 1% multiplicative noise on the first convolution's weights; ``scale``: a convolution
    in the middle of the network scaled by 2%; ``swap``: the last convolution's output channels 3 and 4
    exchanged (weights and bias)."""
    graph = onnx.load(str(src))
    convs = convolutions(graph)
    node, weight = {"noise": convs[0], "scale": convs[len(convs) // 2], "swap": convs[-1]}[kind]
    values = numpy_helper.to_array(weight).copy()
    if kind == "noise":
        values *= 1 + 0.01 * np.random.default_rng(0).standard_normal(values.shape).astype(np.float32)
    elif kind == "scale":
        values *= 1.02
    else:
        values[[3, 4]] = values[[4, 3]]
        if len(node.input) > 2:
            bias = next(i for i in graph.graph.initializer if i.name == node.input[2])
            b = numpy_helper.to_array(bias).copy()
            b[[3, 4]] = b[[4, 3]]
            bias.CopyFrom(numpy_helper.from_array(b, bias.name))
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(graph, str(dst))
    return dst


def check(tmp_path, name, artifact, out, max_images=64):
    # A perturbed graph fails parity against the model: it runs only with --allow-mismatch, which is the
    # point here (the numerics check must catch a wrong backend on its own).
    argv = ["check", "--model", name, "--backend", "onnxruntime", "--artifact", str(artifact),
            "--images", "8", "--max-images", str(max_images), "--size", "128x128",
            "--out", str(tmp_path / out), "--allow-mismatch"]  # fmt: skip
    code = main(argv)
    rows = [r for r in read_jsonl(tmp_path / out / NUMERICS_FILE) if r["role"] == "candidate"]
    return code, rows


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet", "mask_rcnn"])
def test_check_fails_a_perturbed_graph_and_passes_the_untouched_one(tmp_path, name, shared_export_root):
    # The shared cache: test_check_threads' children export the same trained graph.
    graph = cached_export(build_model(name, "trained"), name, ExportRequest(), shared_export_root).path
    if name == "unet":  # Mask R-CNN's untouched graph passes in tests/cli/test_check_threads.py, twice
        code, rows = check(tmp_path, name, graph, "clean")
        assert code == 0 and rows and all(row["verdict"] == "pass" for row in rows)
        assert {row["level"] for row in rows} == {"task", "tensor"}

    for kind in ("noise", "scale"):
        # (No growth of the evaluation set: the verdict under test is the tensor level's.)
        code, rows = check(tmp_path, name, perturbed(graph, tmp_path / f"{kind}.onnx", kind), kind, 8)
        tensor = next(row for row in rows if row["level"] == "tensor")
        # 1% noise on one layer's weights, or one mid-network layer 2% off: the tensor level fails it even
        # where the task metric barely moves (and its verdict may pass or stay inconclusive).
        assert code == 1 and tensor["verdict"] == "fail", kind

    code, rows = check(tmp_path, name, perturbed(graph, tmp_path / "swap.onnx", "swap"), "swap", 16)
    task = [row for row in rows if row["level"] == "task"]
    # Two classes' outputs exchanged: class 3 and 4 (unet: circle/rectangle logits; Mask R-CNN: the
    # circle and rectangle mask channels): the task metric drops, systematically.
    failed = [row for row in task if row["verdict"] == "fail"]
    assert code == 1 and failed
    # Confidently below the band, not merely below on average.
    assert all(row["delta"] < 0 and row["ci_high"] < row["band_low"] for row in failed)


@pytest.mark.slow
def test_check_with_a_config_runs_numerics_only(tmp_path, shared_export_cache):
    config = {
        "name": "tiny",
        "models": [{"name": "unet", "options": {"base_channels": 4}}],
        "backends": [{"name": "torch"}, {"name": "onnxruntime", "precisions": ["fp32", "fp16"]}],
        "numerics": {
            "batch_size": 2,
            "dataset": {"kind": "shapes", "num_images": 4, "height": 64, "width": 64},
        },
    }
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check", str(path), "--out", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out" / "results.jsonl").exists()
    rows = read_jsonl(tmp_path / "out" / NUMERICS_FILE)
    checked = {(r["backend"], r["precision"], r["level"]) for r in rows if r["role"] == "candidate"}
    assert checked == {(b, p, level) for b, p in [("onnxruntime", "fp32"), ("onnxruntime", "fp16")]
                       for level in ("task", "tensor")}  # fmt: skip
    # A second check into the same directory would overwrite it: refused.
    assert main(["check", str(path), "--out", str(tmp_path / "out")]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check"], "give a config file, or --model and --backend"),
        (["check", "--model", "unet"], "give a config file, or --model and --backend"),
        (["check", "--model", "unet", "--backend", "tvm"], "unknown backend 'tvm'"),
        (["check", "--model", "unet", "--backend", "onnxruntime", "--artifact", "missing.onnx"],
         "artifact file not found"),
        (["check", "b.yaml", "--model", "unet"], "are for use without a config file"),
    ],
)  # fmt: skip
def test_bad_check_input_is_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_eval_prints_metrics_as_json(tmp_path, capsys):
    assert main(["data", "--out", str(tmp_path / "d"), "--num", "2", "--size", "64x64"]) == 0
    capsys.readouterr()
    gt = str(tmp_path / "d" / "semantic")
    assert main(["eval", "--task", "semantic", "--gt", gt, "--pred", gt]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["miou"] == 1.0 and result["num_images"] == 2
    assert main(["eval", "--task", "instance", "--gt", str(tmp_path / "d" / "instances.json"),
                 "--pred", str(tmp_path / "none.json")]) == 2  # fmt: skip
    assert "not found" in capsys.readouterr().err
