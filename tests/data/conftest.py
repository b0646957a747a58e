"""Shared fixtures for the data tests: one small shapes dataset written to disk per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from segbench.data import ShapesDataset, write_shapes_dataset


@pytest.fixture(scope="session")
def shapes_val() -> ShapesDataset:
    # Non-square and small, so the whole data test suite stays fast.
    return ShapesDataset(8, height=96, width=128, seed=3, split="val")


@pytest.fixture(scope="session")
def written_root(tmp_path_factory: pytest.TempPathFactory, shapes_val: ShapesDataset) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), shapes_val)
