"""Native TensorRT on a real GPU: engine builds with TF32 off and on against fp64, CUDA graph capture,
replay and recapture, and the runner around it. Skipped where TensorRT or Polygraphy cannot load."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from segbench.backends.tensorrt import TensorRTConfig, TensorRTRunner
from segbench.backends.tensorrt.build import trt_logger
from segbench.backends.tensorrt.engine import TensorRTEngine
from segbench.backends.tensorrt.engine_cache import load_or_build_engine
from segbench.backends.tensorrt.install import TensorRTUnavailable, import_tensorrt
from segbench.backends.tensorrt.profile import OptimizationProfile
from segbench.models.onnx_graph import OnnxGraphModel
from tests.gpu.tiny_graph import FP32_TOLERANCE, TF32_TOLERANCE, relative_error, tiny_reference

pytestmark = pytest.mark.gpu

PROFILE = OptimizationProfile("images", (1, 3, 32, 32), (4, 3, 64, 64), (4, 3, 64, 64))


@pytest.fixture
def trt():
    try:
        return import_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))


def images(batch: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("tf32", [False, True])
def test_an_engine_captures_replays_new_data_and_recaptures_a_new_shape(trt, tiny, tmp_path, tf32):
    path, weights = tiny
    artifact = load_or_build_engine(path, "fp32", PROFILE, cache_dir=tmp_path / "engines", tf32=tf32)
    engine = TensorRTEngine(trt, artifact.path.read_bytes(), torch.device("cuda"), trt_logger(),
                            record_compute_ms=True, use_cuda_graph=True)  # fmt: skip
    stream = torch.cuda.Stream()
    errors = []
    for x in (images(4, 64, 1), images(4, 64, 2), images(2, 32, 3)):  # capture, replay, recapture
        out = engine.infer({"images": torch.from_numpy(x).cuda()}, stream=stream)
        stream.synchronize()
        errors.append(relative_error(out["logits"].cpu().numpy(), tiny_reference(weights, x)))
        assert engine.last_compute_ms is not None and engine.last_compute_ms > 0
    assert engine.cuda_graph_active and engine.cuda_graph_fallback is None
    engine.close()
    limit = TF32_TOLERANCE if tf32 else FP32_TOLERANCE
    assert max(errors) < limit, errors


def test_without_a_stream_the_engine_still_captures_and_the_current_stream_reads_it(trt, tiny, tmp_path):
    """The current stream is the legacy default one here, on which torch refuses a capture: the engine
    runs on its own side stream instead, ordered with the current one."""
    path, weights = tiny
    artifact = load_or_build_engine(path, "fp32", PROFILE, cache_dir=tmp_path / "engines")
    engine = TensorRTEngine(trt, artifact.path.read_bytes(), torch.device("cuda"), trt_logger(),
                            use_cuda_graph=True)  # fmt: skip
    for seed in (4, 5):
        x = images(4, 64, seed)
        out = engine.infer({"images": torch.from_numpy(x).cuda()})["logits"].cpu().numpy()  # current stream
        assert relative_error(out, tiny_reference(weights, x)) < FP32_TOLERANCE
    assert engine.cuda_graph_active and engine.cuda_graph_fallback is None
    with pytest.raises(ValueError, match="outside the engine's optimization profile"):
        engine.infer({"images": torch.zeros(8, 3, 64, 64, device="cuda")})
    engine.close()


def test_the_runner_runs_a_graph_and_a_prebuilt_engine_with_its_precision_checked(trt, tiny, tmp_path):
    path, weights = tiny
    shapes = [(1, 3, 32, 32), (4, 3, 64, 64)]
    x = images(4, 64, 6)
    config = TensorRTConfig(cuda_graph=True)
    with TensorRTRunner(OnnxGraphModel(path), config, "fp32", path, shapes) as runner:
        out = runner.infer({"images": x})["logits"]
        info, limit = runner.describe(), runner.batch_limit()
        engine_path = runner._engine_path
    assert relative_error(out, tiny_reference(weights, x)) < FP32_TOLERANCE
    assert info["cuda_graph"] is True and info["tf32"] is False and info["engine_built"] is True
    assert info["precision_check"] == "built here from the graph" and limit == (
        4, "the engine's optimization profile ends at batch 4")  # fmt: skip
    # The cached engine with its sidecar, given as an artifact: checked against the sidecar.
    artifact = tmp_path / "tiny.engine"
    shutil.copy(engine_path, artifact)
    shutil.copy(engine_path.with_suffix(".json"), artifact.with_suffix(".json"))
    config = TensorRTConfig(artifact=artifact)
    with TensorRTRunner(OnnxGraphModel(path), config, "fp32", artifact, shapes) as runner:
        again = runner.infer({"images": x})["logits"]
        assert runner.describe()["precision_check"] == "sidecar tiny.json"
    np.testing.assert_array_equal(again, out)
