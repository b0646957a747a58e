"""A tiny convolution graph and its fp64 reference: what the GPU tier measures precision against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# fp32 through cuDNN / cuBLAS / TensorRT without TF32: a few ulps over a 576-term sum. TF32 keeps 10
# mantissa bits: about 1e-3 relative on these sums, never near 1e-1.
FP32_TOLERANCE = 1e-5
TF32_TOLERANCE = 1e-2


def tiny_graph(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Conv(3->64, 3x3) + Relu + Conv(64->64, 3x3) as ONNX, input ``images`` [N, 3, H, W] with dynamic N, H,
    W: a 576-term reduction per output, so TF32 (about 1e-3 relative) shows against fp32 (about 1e-6).
    Returns the weights, for the fp64 reference."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {
        "w1": (rng.standard_normal((64, 3, 3, 3)) * 0.2).astype(np.float32),
        "w2": (rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["images", "w1"], ["h1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("Conv", ["h2", "w2"], ["logits"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 64, "H", "W"])],
        initializer=[numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime releases back to 1.15 read
    onnx.save(model, str(path))
    return weights


def tiny_reference(weights: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """The tiny graph in fp64 on the CPU: the yardstick for fp32 and TF32 alike."""
    x = torch.from_numpy(images).double()
    hidden = torch.relu(torch.nn.functional.conv2d(x, torch.from_numpy(weights["w1"]).double(), padding=1))
    return torch.nn.functional.conv2d(hidden, torch.from_numpy(weights["w2"]).double(), padding=1).numpy()


def relative_error(found: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(found.astype(np.float64) - reference).max() / max(np.abs(reference).max(), 1e-30))
