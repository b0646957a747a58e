"""onnxruntime-gpu on a real GPU: the CUDA provider's TF32 switch, the TensorRT provider's TF32 truth,
profiles, partitioned graphs and per-graph engine caches. Skipped where onnxruntime-gpu cannot load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segbench.backends.onnxruntime_backend import OnnxRuntimeConfig, OnnxRuntimeRunner, unavailable_reason
from segbench.models.onnx_graph import OnnxGraphModel
from tests.gpu.tiny_graph import FP32_TOLERANCE, TF32_TOLERANCE, relative_error, tiny_graph, tiny_reference

pytestmark = pytest.mark.gpu

SHAPES = [(1, 3, 32, 32), (4, 3, 64, 64)]


def runner_for(path: Path, **options) -> OnnxRuntimeRunner:
    config = OnnxRuntimeConfig(device="cuda", **options)
    reason = unavailable_reason(config)
    if reason is not None:
        pytest.skip(reason)
    return OnnxRuntimeRunner(OnnxGraphModel(path), config, "fp32", path, SHAPES)


def images(batch: int = 4, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("tf32", [False, True])
def test_the_cuda_providers_tf32_follows_the_entry_measured_against_fp64(tiny, tf32):
    path, weights = tiny
    x = images()
    with runner_for(path, tf32=tf32) as runner:
        error = relative_error(runner.infer({"images": x})["logits"], tiny_reference(weights, x))
        info = runner.describe()
    assert info["provider"] == "CUDAExecutionProvider"
    assert info["provider_options"]["use_tf32"] == ("1" if tf32 else "0")
    assert error < (TF32_TOLERANCE if tf32 else FP32_TOLERANCE), error


def test_the_tensorrt_providers_fp32_is_recorded_as_tf32_and_its_profile_bounds_the_batch(tiny):
    path, weights = tiny
    x = images()
    with runner_for(path, tensorrt=True) as runner:
        error = relative_error(runner.infer({"images": x})["logits"], tiny_reference(weights, x))
        info, limit = runner.describe(), runner.batch_limit()
    assert info["provider"] == "TensorrtExecutionProvider"
    assert info["tf32"] is True and info["trt_profile"] == "explicit: one profile over every cell"
    assert error < TF32_TOLERANCE, error
    assert limit is not None and limit[0] == 4


def test_a_graph_the_tensorrt_provider_splits_runs_without_an_explicit_profile(tmp_path):
    """NonZero stays off TensorRT: the subgraph after it has a data-dependent input no profile could
    name. segbench gives no explicit profile, so onnxruntime builds per shape instead of refusing."""
    import onnx
    from onnx import TensorProto, helper

    path = tmp_path / "split.onnx"
    tiny_graph(path)
    model = onnx.load(str(path))
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    model.graph.initializer.append(zero)
    model.graph.node.extend([
        helper.make_node("Greater", ["logits", "zero"], ["positive"]),
        helper.make_node("NonZero", ["positive"], ["where"]),
        helper.make_node("Cast", ["where"], ["where_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["where_float", "where_float"], ["where_squared"]),
    ])  # fmt: skip
    model.graph.output.append(helper.make_tensor_value_info("where_squared", TensorProto.FLOAT, [4, None]))
    onnx.save(model, str(path))
    x = images(2, 32)
    with runner_for(path, tensorrt=True) as runner:
        out = runner.infer({"images": x})
        info, limit = runner.describe(), runner.batch_limit()
    assert info["trt_profile"].startswith("per shape: the graph is partitioned (NonZero")
    assert limit is None  # no profile: memory alone bounds the batch
    assert out["where_squared"].shape == (4, int((out["logits"] > 0).sum()))


def test_tensorrt_provider_engines_are_never_shared_by_graphs_with_other_weights(tmp_path):
    """Same file name, same tensor names, other weights: each graph runs its own engine."""
    results = []
    for seed in (0, 1):
        path = tmp_path / f"seed{seed}" / "model.onnx"
        path.parent.mkdir()
        weights = tiny_graph(path, seed=seed)
        x = images(seed=5)
        with runner_for(path, tensorrt=True) as runner:
            results.append(relative_error(runner.infer({"images": x})["logits"], tiny_reference(weights, x)))
            engines = Path(runner.provider_options[0]["trt_engine_cache_path"])
        assert any(engines.iterdir()), "no engine cached"
    assert all(error < TF32_TOLERANCE for error in results), results
