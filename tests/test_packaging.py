"""The extras install what works together (pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

EXTRAS = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
    "optional-dependencies"
]


def requirement(extra: str, name: str) -> Requirement:
    found = [Requirement(text) for text in EXTRAS[extra] if Requirement(text).name == name]
    assert len(found) == 1, (extra, name, EXTRAS[extra])
    return found[0]


def test_no_extra_installs_both_onnxruntime_packages():
    for extra, requirements in EXTRAS.items():
        names = {Requirement(text).name for text in requirements}
        assert not {"onnxruntime", "onnxruntime-gpu"} <= names, extra


def test_the_gpu_extras_are_one_cuda_line_and_the_tensorrt_provider_gets_the_tensorrt_it_links():
    for extra in ("gpu", "ort-trt"):
        # onnxruntime-gpu before 1.27 is built for CUDA 12; torch cu130 and tensorrt-cu13 are CUDA 13.
        assert not requirement(extra, "onnxruntime-gpu").specifier.contains("1.26.0"), extra
    libs = requirement("ort-trt", "tensorrt-cu13-libs").specifier
    # Every onnxruntime-gpu release's TensorRT provider links libnvinfer.so.10.
    assert libs.contains("10.13.3.9") and not libs.contains("11.0.0.114")
    native = requirement("trt", "tensorrt-cu13").specifier
    assert native.contains("10.13.3.9") and native.contains("11.4.0.106") and not native.contains("12.0.0")


def test_polygraphy_is_at_least_the_release_whose_tensorrt_11_handling_segbench_relies_on():
    for extra in ("trt", "dev"):
        polygraphy = requirement(extra, "polygraphy").specifier
        assert polygraphy.contains("0.53.6") and not polygraphy.contains("0.52.0"), extra
