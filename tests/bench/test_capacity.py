"""The largest-batch search driven with the fake runner (tests/fakes/fake_backend.py): it stops at the
runner's own batch limit with its reason, at the sweep's limit, or at a failure, and has the runner drop
what it keeps per shape (captured CUDA graphs) before the search and after every try."""

from __future__ import annotations

import pytest

from segbench.bench.pipeline import run_benchmark
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import CAPACITY_FILE
from tests.fakes import fake_backend
from tests.fakes.configs import tiny_config


@pytest.fixture
def fake():
    with fake_backend.registered():
        yield fake_backend.RELEASES


def search(tmp_path, backend: dict, max_batch_limit: int = 64) -> dict:
    sweep = {"input_sizes": ["32x32"], "batch_sizes": [1, 3], "find_max_batch": True,
             "max_batch_limit": max_batch_limit}  # fmt: skip
    config = tiny_config([backend], sweep=sweep, timing={"warmup": 0, "iterations": 1})
    run_benchmark(config, tmp_path)
    (row,) = read_jsonl(tmp_path / CAPACITY_FILE)
    return row


@pytest.mark.slow
def test_the_search_stops_at_the_runners_batch_limit_and_says_why(tmp_path, fake):
    row = search(tmp_path, {"name": "fake", "batch_limit": 5})
    assert (row["max_batch"], row["limit"], row["limit_reached"], row["fails_at"]) == (5, 5, True, None)
    assert row["stopped_by"] == "fake profile max batch 5"
    # Released once for what the timing cells left (their last batch, 3), then after each try: 3, 5.
    assert fake == [3, 3, 5]


@pytest.mark.slow
def test_the_sweeps_limit_wins_when_it_is_lower(tmp_path, fake):
    row = search(tmp_path, {"name": "fake", "batch_limit": 100}, max_batch_limit=6)
    assert (row["max_batch"], row["limit"], row["stopped_by"]) == (6, 6, "max_batch_limit")
    assert fake == [3, 3, 6]


@pytest.mark.slow
def test_a_failing_batch_ends_the_search_and_every_try_is_released(tmp_path, fake):
    row = search(tmp_path, {"name": "fake", "fail_batches": [12, 24]}, max_batch_limit=16)
    assert (row["max_batch"], row["fails_at"], row["limit_reached"]) == (11, 12, False)
    assert row["error"] == "RuntimeError: fake failure at batch 12" and row["stopped_by"] is None
    # Doubling 3, 6, 12 (fails), bisecting 9, 10, 11: the failed try is released too.
    assert fake == [3, 3, 6, 12, 9, 10, 11]


@pytest.mark.slow
def test_a_runner_limit_below_the_sweeps_batches_starts_the_search_there(tmp_path, fake):
    row = search(tmp_path, {"name": "fake", "batch_limit": 2})
    assert (row["max_batch"], row["limit"], row["limit_reached"]) == (2, 2, True)
    assert row["stopped_by"] == "fake profile max batch 2"
