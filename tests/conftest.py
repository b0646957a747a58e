import os

import pytest

from segbench.export.cache import CACHE_ENV


def pytest_configure(config):
    """Under pytest-xdist (``-n N``), share the CPUs among the workers: N workers each starting torch's
    default of one thread per core would oversubscribe the machine and slow every test down. Only this
    process's intra-op pool: child processes a test starts (segbench ab's sides, `segbench check` in a
    subprocess) still size theirs from the CPUs they see."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        import torch

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cpus // workers))


@pytest.fixture(autouse=True)
def export_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own empty export cache, never the user's ~/.cache/segbench."""
    root = tmp_path_factory.mktemp("segbench-cache")
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


@pytest.fixture(scope="session")
def shared_export_root(tmp_path_factory):
    return tmp_path_factory.mktemp("segbench-shared-cache")


@pytest.fixture
def shared_export_cache(shared_export_root, monkeypatch):
    """An export cache shared by the tests that ask for it (instead of export_cache's empty one): a test
    that exports the same model as another, and asserts nothing about whether its graph was exported or
    reused, skips the export (seconds each). The cache is content-addressed (model, options, weights
    digest, exporter, versions), so a hit is the graph the test would have exported; its writes are
    atomic, so xdist workers (each with its own root here) never see a torn entry."""
    monkeypatch.setenv(CACHE_ENV, str(shared_export_root))
    return shared_export_root
