"""Fixtures shared by the TensorRT builder and engine tests (the stand-in ``tensorrt`` module)."""

import pytest


@pytest.fixture
def onnx_file(tmp_path):
    """A file the fake TensorRT parser opens but does not parse."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not parsed by the fake, only opened")
    return path
