import pytest

from segbench.export.cache import CACHE_ENV


@pytest.fixture(autouse=True)
def export_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own empty export cache, never the user's ~/.cache/segbench."""
    root = tmp_path_factory.mktemp("segbench-cache")
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root
