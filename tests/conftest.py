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


@pytest.fixture(scope="session")
def shared_export_root(tmp_path_factory):
    return tmp_path_factory.mktemp("segbench-shared-cache")


@pytest.fixture(autouse=True)
def _export_cache_env(request, shared_export_root, tmp_path_factory, monkeypatch):
    """Never the user's ~/.cache/segbench. By default the session's shared export cache: the cache is
    content-addressed (model, options, weights digest, exporter, versions), so a hit is the graph the test
    would have exported, and a test exporting a model another test exported skips the export (seconds to
    tens of seconds each). Its writes are atomic, so xdist workers and child processes never see a torn
    entry. A test whose point is exporting or caching itself gets an empty one: it names ``export_cache``,
    or its module is marked ``fresh_export_cache``."""
    fresh = request.node.get_closest_marker("fresh_export_cache") is not None
    root = tmp_path_factory.mktemp("segbench-cache") if fresh else shared_export_root
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


@pytest.fixture
def export_cache(tmp_path_factory, monkeypatch):
    """An empty export cache of the test's own."""
    root = tmp_path_factory.mktemp("segbench-cache")
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


@pytest.fixture
def shared_export_cache(shared_export_root, monkeypatch):
    """The shared cache, named by a test in a ``fresh_export_cache`` module that does not need its own."""
    monkeypatch.setenv(CACHE_ENV, str(shared_export_root))
    return shared_export_root
