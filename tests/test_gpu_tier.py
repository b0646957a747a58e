"""The GPU tier's own contract, checked on any machine: every test under tests/gpu is marked ``gpu``, and
without a CUDA device ``pytest -m gpu`` skips each of them with its reason; the GPU smoke config plans
every CUDA path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segbench.cli import main

ROOT = Path(__file__).resolve().parents[1]


def pytest_lines(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    return done.stdout.splitlines()


@pytest.fixture(scope="module")
def gpu_tier_lines() -> list[str]:
    """What ``pytest -m gpu -q -rs tests/gpu`` prints; one child pytest serves both tests below (each
    start costs seconds). With a CUDA device visible the tier would run for real: collected only."""
    collect = ["--collect-only"] if torch.cuda.is_available() else []
    return pytest_lines("-m", "gpu", "-q", "-rs", *collect, "tests/gpu")


@pytest.mark.slow
def test_every_test_of_the_gpu_tier_is_marked_gpu(gpu_tier_lines):
    # -m gpu deselects every test without the mark: none is, and the tier is not empty.
    summary = gpu_tier_lines[-1]
    assert not any("deselected" in line for line in gpu_tier_lines), gpu_tier_lines
    assert any(word in summary for word in ("skipped", "passed", "collected")), gpu_tier_lines
    assert "error" not in summary and "no tests" not in summary, gpu_tier_lines


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible: the tier runs for real")
def test_without_cuda_the_gpu_tier_skips_every_test_with_its_reason(gpu_tier_lines):
    lines = gpu_tier_lines
    skips = [line for line in lines if line.startswith("SKIPPED")]
    summary = lines[-1]
    assert "skipped" in summary and "passed" not in summary and "failed" not in summary, lines
    assert skips and all(
        line.endswith(("no CUDA device visible to torch", "is a CPU-only build")) for line in skips
    ), skips


def test_the_gpu_smoke_config_plans_every_cuda_path(capsys):
    assert main(["run", str(ROOT / "examples" / "benchmark-gpu-smoke.yaml"), "--dry-run"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    for path in ("torch/cuda/fp32", "torch/cuda/fp16", "torch/cuda/bf16", "onnxruntime/cuda/fp32",
                 "onnxruntime/cuda/fp16", "tensorrt/cuda/fp32", "tensorrt/cuda/fp16"):  # fmt: skip
        assert path in printed, path
    assert "TensorRT provider profile: an engine per shape" in printed  # Mask R-CNN's split graph
    assert "TensorRT provider profile: one explicit profile" in printed  # U-Net's whole one
    assert "largest batch" in printed and "numerics check" in printed
