import os

import pytest

from segbench.cache_dir import CACHE_ENV


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
    """One cache for the whole session, xdist workers included: each worker's base temp directory sits
    in the session's, so a graph one worker exported is a hit for the other."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "segbench-shared-cache"
    root.mkdir(exist_ok=True)
    return root


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


@pytest.fixture
def shared_graph(shared_export_root):
    """``graph(name, options, **request)``: the verified ONNX export of model ``name`` built with
    ``options`` (random seeded weights), from the session's shared cache; ``request`` holds
    ``ExportRequest`` fields (precision, exporter, static_size...). For tests that need a real graph but
    are not about exporting or caching one: the first call in the session exports it (seconds to tens of
    seconds of tracing), every later one, in any worker, is a cache hit."""
    from segbench.export.artifacts import ExportRequest, cached_export
    from segbench.models import build_model

    def graph(name: str, options: dict, **request):
        model = build_model(name, options=options)
        return cached_export(model, name, ExportRequest(**request), shared_export_root)

    return graph


@pytest.fixture
def tiny_unet_graph(shared_graph):
    """``graph(precision="fp32")``: ``shared_graph`` of the tests' tiny U-Net (``TINY_UNET``)."""
    from tests.fakes.configs import TINY_UNET

    return lambda precision="fp32": shared_graph("unet", TINY_UNET, precision=precision)
