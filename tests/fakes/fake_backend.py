"""A fake backend for driving the pipeline in tests: it runs the model's PyTorch forward (so numerics
pass), fails or kills its process at chosen batch sizes, and counts its activations and deactivations.

``SPECS`` are not registered on import; a test registers them for its own duration (``registered``),
and ``tests.fakes.fake_backend_plugin`` registers them in a child process (``$SEGBENCH_PLUGINS``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from segbench.backends import BACKENDS, GRAPH, MODULE, BackendConfig, BackendSpec, Runner
from segbench.backends.base import GraphBackendConfig

EVENTS: list[str] = []  # "activate" / "deactivate", in order, across every fake runner of a process
# The batch of the last infer before each release_cached_shapes (None: released before any infer).
RELEASES: list[int | None] = []


class FakeConfig(BackendConfig):
    name: Literal["fake"] = "fake"
    fail_batches: list[int] = Field(default_factory=list)  # infer raises RuntimeError at these
    crash_batches: list[int] = Field(default_factory=list)  # infer kills its process (exit code 134)
    batch_limit: int | None = None  # the runner's own largest batch (as an engine profile's)


class FakeGraphConfig(GraphBackendConfig):
    """The same runner behind an exported graph (the pipeline asks its exporter for one first)."""

    name: Literal["fake_graph"] = "fake_graph"
    fail_batches: list[int] = Field(default_factory=list)
    crash_batches: list[int] = Field(default_factory=list)
    batch_limit: int | None = None


class FakeRunner(Runner):
    def activate(self) -> None:
        EVENTS.append("activate")
        self._last_batch: int | None = None

    def batch_limit(self) -> tuple[int, str] | None:
        limit = self.config.batch_limit
        return None if limit is None else (limit, f"fake profile max batch {limit}")

    def release_cached_shapes(self) -> None:
        RELEASES.append(self._last_batch)
        self._last_batch = None

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = feeds[self.model.input_names[0]]
        self._last_batch = len(images)
        if len(images) in self.config.crash_batches:
            os._exit(134)  # as a segfault or a poisoned CUDA context would
        if len(images) in self.config.fail_batches:
            raise RuntimeError(f"fake failure at batch {len(images)}")
        with torch.inference_mode():
            raw = self.model(torch.from_numpy(images))
        outputs = raw if isinstance(raw, tuple) else (raw,)
        return {name: out.numpy() for name, out in zip(self.model.output_names, outputs, strict=True)}

    def deactivate(self) -> None:
        EVENTS.append("deactivate")


SPECS = (
    BackendSpec(name="fake", config_class=FakeConfig, runner_class=FakeRunner, consumes=MODULE),
    BackendSpec(name="fake_graph", config_class=FakeGraphConfig, runner_class=FakeRunner, consumes=GRAPH),
)


@contextmanager
def registered():
    """The fake backends known to configs and runs for the block only."""
    saved = dict(BACKENDS)
    BACKENDS.update({spec.name: spec for spec in SPECS})
    EVENTS.clear()
    RELEASES.clear()
    try:
        yield
    finally:
        BACKENDS.clear()
        BACKENDS.update(saved)
