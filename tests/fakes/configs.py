"""The tiny benchmark configs the tests build: a slim U-Net (4 base channels) at 32x32 on the fake
backend, 2 timed iterations and no warm-up, the numerics check off unless asked for (then 4 synthetic
32x32 images). A test overrides the top-level keys its point is about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from segbench.config import BenchmarkConfig, validate_config

# The U-Net of the tests that need a real graph (the ``tiny_unet_graph`` fixture exports it once a session).
TINY_UNET = {"base_channels": 4, "num_classes": 6}
TINY_NUMERICS = {"batch_size": 2, "max_images": 4,
                 "dataset": {"kind": "shapes", "num_images": 4, "height": 32, "width": 32}}  # fmt: skip


def tiny_config_data(
    backends: list[dict[str, Any]] | None = None, numerics: bool | dict[str, Any] = False, **overrides: Any
) -> dict[str, Any]:
    """The config as the YAML would hold it: ``numerics`` True turns the tiny check on, a mapping is the
    whole ``numerics:`` block; ``overrides`` replace whole top-level keys."""
    data: dict[str, Any] = {
        "name": "fake",
        "models": [{"name": "unet", "options": {"base_channels": 4}}],
        "backends": backends or [{"name": "fake"}],
        "sweep": {"input_sizes": ["32x32"], "batch_sizes": [1, 2, 3]},
        "timing": {"warmup": 0, "iterations": 2},
        "numerics": numerics if isinstance(numerics, dict) else {"enabled": numerics, **TINY_NUMERICS},
    }
    data.update(overrides)
    return data


def tiny_config(
    backends: list[dict[str, Any]] | None = None, numerics: bool | dict[str, Any] = False, **overrides: Any
) -> BenchmarkConfig:
    """The same, validated (the fake backend must be registered: ``fake_backend.registered()``)."""
    return validate_config(tiny_config_data(backends, numerics, **overrides))


def write_config(directory: Path, data: dict[str, Any], name: str = "bench.yaml") -> Path:
    """``data`` as a YAML file in ``directory``: what ``segbench run`` reads."""
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path
