"""A YAML ``artifact:`` is checked before any cell runs: corrupt or foreign graphs are bad input (exit 2),
one that fails parity against its model is refused unless ``allow_mismatch: true``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from segbench.cli import main
from segbench.models import build_model
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import NUMERICS_FILE, RESULTS_FILE
from tests.fakes.configs import TINY_UNET, tiny_config_data, write_config

# These tests are about exporting and caching: each starts from an empty export cache.
pytestmark = pytest.mark.fresh_export_cache

OPTIONS = TINY_UNET  # the model tiny_unet_graph exported


def config(tmp_path, artifact, **backend) -> str:
    numerics = {"batch_size": 2, "dataset": {"kind": "shapes", "num_images": 2, "height": 32, "width": 32}}
    data = tiny_config_data([{"name": "onnxruntime", "artifact": str(artifact), **backend}], numerics,
                            name="artifact", models=[{"name": "unet", "options": OPTIONS}],
                            sweep={"input_sizes": ["32x32"], "batch_sizes": [1]})  # fmt: skip
    return str(write_config(tmp_path, data))


def scaled(tmp_path, graph_path) -> str:
    """The model's own graph with one convolution's weights scaled by 1.5: parity fails."""
    graph = onnx.load(str(graph_path))
    weight = next(init for init in graph.graph.initializer if numpy_helper.to_array(init).ndim == 4)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.5), weight.name))
    path = tmp_path / "scaled.onnx"
    onnx.save(graph, str(path))
    return path


def test_a_corrupt_artifact_is_bad_input_before_any_cell(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf graph")
    out = tmp_path / "out"
    assert main(["run", config(tmp_path, bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "backends[0].artifact: cannot read" in err and "as ONNX" in err
    assert not out.exists()


def test_a_graph_with_other_input_names_is_refused(tmp_path, capsys):
    model = build_model("unet", options=OPTIONS)
    foreign = tmp_path / "mine.onnx"
    torch.onnx.export(model, (torch.rand(1, 3, 32, 32),), str(foreign), input_names=["input"],
                      output_names=["output"], dynamo=False)  # fmt: skip
    assert main(["run", config(tmp_path, foreign), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not match model unet: inputs ['input'], the model feeds ['images']" in err
    assert "allow_mismatch: true" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_graph_failing_parity_runs_only_when_allowed(tmp_path, capsys, tiny_unet_graph):
    artifact = scaled(tmp_path, tiny_unet_graph().path)
    refused = tmp_path / "refused"
    assert main(["run", config(tmp_path, artifact), "--out", str(refused), "--no-report"]) == 1
    cells = read_jsonl(refused / RESULTS_FILE)
    assert cells and all(c["status"] == "failed" and "does not match unet" in c["error"] for c in cells)
    assert "parity failed" in cells[0]["error"] and "allow_mismatch: true runs it anyway" in cells[0]["error"]
    capsys.readouterr()
    allowed = tmp_path / "allowed"
    main(["run", config(tmp_path, artifact, allow_mismatch=True), "--out", str(allowed), "--no-report"])
    cells = read_jsonl(allowed / RESULTS_FILE)
    assert all(c["status"] == "ok" and "parity failed" in c["artifact"]["mismatch"] for c in cells)
    assert "despite" in " ".join(capsys.readouterr().out.split())
    checks = [r for r in read_jsonl(allowed / NUMERICS_FILE) if r["level"] == "tensor"]
    assert checks and checks[0]["verdict"] == "fail"  # the numerics check still judges it
