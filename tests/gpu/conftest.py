"""The GPU tier: checks that only mean something on a CUDA device, run with ``pytest -m gpu``.

Every module here marks its tests ``gpu``; on a machine without a visible CUDA device each of them is
skipped with the reason, so the tier costs the CPU suite nothing. What needs a package segbench does not
require (TensorRT and Polygraphy, onnxruntime-gpu, nvidia-ml-py) is skipped with its own reason.
"""

from __future__ import annotations

import pytest
import torch


def no_cuda_reason() -> str | None:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    return None


@pytest.fixture(autouse=True)
def cuda_device():
    """Skip without a CUDA device; after each test, let its work finish and give its cached memory back,
    so one test's leftovers neither fail nor time the next."""
    reason = no_cuda_reason()
    if reason is not None:
        pytest.skip(reason)
    yield torch.device("cuda", 0)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


@pytest.fixture
def tiny(tmp_path):
    """``(path, weights)`` of the tiny graph."""
    from tests.gpu.tiny_graph import tiny_graph

    path = tmp_path / "tiny.onnx"
    return path, tiny_graph(path)
