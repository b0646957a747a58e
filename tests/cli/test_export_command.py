"""``segbench export``: cached ONNX exports, fp16 graphs, the TensorRT check and the missing-TensorRT path."""

import json
import os
import stat
import subprocess
import sys

import onnx
import pytest

from segbench.cli import main

# These tests are about exporting and caching: each starts from an empty export cache.
pytestmark = pytest.mark.fresh_export_cache

TINY_UNET = ["unet", "--weights", "random", "--option", "base_channels=4", "--option", "num_classes=3"]


def export(capsys, tmp_path, *extra):
    try:
        code = main(["export", *TINY_UNET, "--out", str(tmp_path / "out"), *extra])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.slow
def test_export_writes_a_checked_graph_and_reuses_it(capsys, tmp_path, umask_022):
    code, out, _ = export(capsys, tmp_path)
    graph = tmp_path / "out" / "unet.onnx"
    assert code == 0 and graph.is_file() and "exported in" in out
    # The graph gets the same normal permissions as its manifest (not a temporary file's 0600).
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "out").iterdir()}
    assert modes == {"unet.onnx": 0o644, "unet.json": 0o644}
    onnx.checker.check_model(str(graph), full_check=True)
    dims = [d.dim_param for d in onnx.load(str(graph)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]
    assert "argmax" in out and "pass" in out and "ready" in out
    manifest = json.loads((tmp_path / "out" / "unet.json").read_text())
    assert manifest["tensorrt_ready"] is True and manifest["export"]["parity"]
    code, out, _ = export(capsys, tmp_path)
    assert code == 0 and "reused from the cache" in out
    assert json.loads((tmp_path / "out" / "unet.json").read_text())["export"]["cached"] is True


@pytest.mark.slow
def test_export_fp16_static(capsys, tmp_path):
    code, out, _ = export(capsys, tmp_path, "--fp16", "--static", "64x96", "--batch", "2")
    graph = onnx.load(str(tmp_path / "out" / "unet-64x96-b2-fp16.onnx"))
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert code == 0 and dims == [2, 3, 64, 96]
    assert onnx.TensorProto.FLOAT16 in {init.data_type for init in graph.graph.initializer}
    # The parity table shows what the verdict was judged on, with fp16's bounds and their direction;
    # the relative error only in a note that says it is not judged.
    rows = [line for line in out.splitlines() if line.rstrip().endswith("pass │")]
    assert any("max abs err (logits)" in row and "<=" in row for row in rows)
    assert any("argmax agreement" in row and ">=99%" in row for row in rows)
    assert not any("rel" in row for row in rows)
    assert "Not judged: max elementwise relative error" in out


TINY_MASK2FORMER = [
    "mask2former", "--weights", "random", "--static", "64x64", "--batch", "1",
    *(f"--option={option}" for option in ("backbone=resnet-tiny", "num_classes=6", "num_queries=6",
                                           "hidden_dim=32", "encoder_layers=1", "decoder_layers=2")),
]  # fmt: skip


@pytest.mark.slow
def test_mask2former_export_prints_no_exporter_chatter(capfd, tmp_path):
    # A real process: in pytest's, its logging plugin would catch the exporter's warnings before they
    # reach the terminal. Unquieted, onnxscript prints "Skipping constant folding for op Split with
    # multiple outputs." (and LayerNormalization) three times each here.
    out = str(tmp_path / "out")
    proc = subprocess.run([sys.executable, "-m", "segbench", "export", *TINY_MASK2FORMER, "--out", out])
    captured = capfd.readouterr()
    assert proc.returncode == 0 and "exported in" in captured.out
    assert "Skipping constant folding" not in captured.out + captured.err
    assert captured.err == ""


@pytest.mark.slow
def test_trt_check_only_needs_no_tensorrt(capsys, tmp_path):
    code, out, _ = export(capsys, tmp_path, "--trt", "--check-only", "--sizes", "128x128,256x256",
                          "--batch-sizes", "1,8")  # fmt: skip
    assert code == 0
    assert "covered by the profile" in out and "[8, 3, 256, 256]" in out
    manifest = json.loads((tmp_path / "out" / "unet.json").read_text())
    assert manifest["profile"] == {"input_name": "images", "min": [1, 3, 128, 128], "opt": [8, 3, 256, 256],
                                   "max": [8, 3, 256, 256]}  # fmt: skip
    assert "engine" not in manifest


@pytest.mark.slow
def test_trt_without_tensorrt_is_one_line_exit_2(tmp_path):
    # A real process: no traceback, one line, and nothing exported before TensorRT was found missing.
    proc = subprocess.run(
        [sys.executable, "-m", "segbench", "export", *TINY_UNET, "--trt", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "segbench: error: TensorRT is not installed: pip install 'segbench[trt]' "
        "(needs an NVIDIA GPU and NVIDIA's package index)"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--check-only"], "--check-only needs --trt"),
        (["--static", "64x64", "--sizes", "128x128", "--trt", "--check-only"], "--sizes must equal --static"),
        (
            ["--batch", "2", "--batch-sizes", "1,2", "--trt", "--check-only"],
            "--batch-sizes must equal --batch",
        ),
        (["--batch", "0"], "expected a positive integer"),
        (["--option", "base_channels"], "expected KEY=VALUE"),
        (["--option", "depth=3"], "depth"),
    ],
)
def test_bad_export_input_is_one_line(capsys, tmp_path, argv, message):
    code, _, err = export(capsys, tmp_path, *argv)
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_unknown_model_and_per_size_model(capsys, tmp_path):
    assert main(["export", "segformer"]) == 2
    assert "unknown model 'segformer'" in capsys.readouterr().err
    code = main(["export", "mask2former", "--out", str(tmp_path)])
    assert (
        code == 2 and "mask2former is exported per input size: give --static HxW" in capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("version", ["10.8.0", "11.1.0"])
def test_trt_export_builds_the_engine_from_the_graph_at_its_precision(capsys, tmp_path, monkeypatch, version,
                                                                      umask_022):  # fmt: skip
    """The --trt path with segbench's build seam replaced (tests/fakes/fake_tensorrt_build.py): never a
    verified engine, but the wiring of precision (the fp16 graph for an fp16 engine, on 10 and 11), profile
    and engine cache."""
    from segbench.models.onnx_graph import graph_precision, load_graph
    from tests.fakes.fake_tensorrt_build import install_fake_build

    _, fake = install_fake_build(monkeypatch, version)
    code, out, _ = export(capsys, tmp_path, "--trt", "--fp16", "--sizes", "64x64", "--batch-sizes", "1,2")
    assert code == 0 and "built in" in " ".join(out.split())  # the console wraps long paths
    out_dir = tmp_path / "out"
    assert (out_dir / "unet-fp16.onnx").is_file() and (out_dir / "unet-fp16.engine").is_file()
    assert stat.S_IMODE((out_dir / "unet-fp16.engine").stat().st_mode) == 0o644
    (call,) = fake.calls
    assert call["precision"] == "fp16" and graph_precision(load_graph(call["onnx_path"])) == "fp16"
    profile = call["profile"]
    assert (profile.min, profile.opt, profile.max) == ((1, 3, 64, 64), (2, 3, 64, 64), (2, 3, 64, 64))
    manifest = json.loads((tmp_path / "out" / "unet-fp16.json").read_text())
    assert manifest["engine"]["built"] is True and manifest["engine"]["trt_version"] == version
    code, out, _ = export(capsys, tmp_path, "--trt", "--fp16", "--sizes", "64x64", "--batch-sizes", "1,2")
    assert code == 0 and "engine on NVIDIA H100 80GB HBM3, reused from the cache" in " ".join(out.split())
    assert len(fake.calls) == 1
