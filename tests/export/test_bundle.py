"""The export use case (``segbench.bench.export_bundle``) without the command line: typed request in, typed
outcome out, progress through the status callback and nothing printed."""

import json
import subprocess
import sys

import pytest

from segbench.bench.export_bundle import BundleRequest, export_bundle, file_stem, profile_shapes
from segbench.errors import ConfigError

TINY_UNET = {"model": "unet", "weights": "random", "options": {"base_channels": 4, "num_classes": 3}}


@pytest.mark.slow
def test_export_returns_what_it_made_and_prints_nothing(capsys, tmp_path):
    statuses = []
    request = BundleRequest(**TINY_UNET, trt=True, check_only=True, sizes=[(64, 64)], out=tmp_path / "out")
    outcome = export_bundle(request, status=statuses.append)
    assert capsys.readouterr().out == ""
    assert statuses == ["exporting unet (fp32)"]
    assert outcome.exit_code == 0 and outcome.export is not None and outcome.export_error is None
    assert outcome.onnx_path == tmp_path / "out" / "unet.onnx" and outcome.onnx_path.is_file()
    assert outcome.readiness is not None and outcome.readiness.ready
    assert outcome.profile is not None and outcome.profile.max == (4, 3, 64, 64)
    assert outcome.engine is None and outcome.engine_path is None and outcome.engine_error is None
    manifest = json.loads(outcome.manifest_path.read_text())
    assert manifest["onnx"] == str(outcome.onnx_path) and manifest["profile"] == outcome.profile.to_dict()


def test_bad_requests_raise_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="--check-only needs --trt"):
        export_bundle(BundleRequest(**TINY_UNET, check_only=True, out=tmp_path / "out"))
    with pytest.raises(ConfigError, match="unknown model"):
        export_bundle(BundleRequest("segformer", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_profile_shapes_and_file_names():
    assert profile_shapes(BundleRequest("unet")) == [
        (1, 3, 256, 256), (4, 3, 256, 256), (1, 3, 512, 512), (4, 3, 512, 512),
    ]  # fmt: skip
    static = BundleRequest("unet", static_size=(64, 96), batch=2)
    assert profile_shapes(static) == [(2, 3, 64, 96)]
    assert file_stem(static, "fp16") == "unet-64x96-b2-fp16" and file_stem(static, "fp32") == "unet-64x96-b2"
    with pytest.raises(ConfigError, match="--sizes must equal --static 64x96"):
        profile_shapes(BundleRequest("unet", static_size=(64, 96), sizes=[(64, 64)]))
    with pytest.raises(ConfigError, match="--batch-sizes must equal --batch 2"):
        profile_shapes(BundleRequest("unet", batch=2, batch_sizes=[1, 2]))


@pytest.mark.slow
def test_bundle_does_not_import_the_reports_layer():
    # It returns data; printing it (reports' tables) is the command line's job.
    code = (
        "import sys, segbench.bench.export_bundle\n"
        "print([m for m in sys.modules if m.startswith('segbench.reports')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
