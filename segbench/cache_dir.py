"""Where segbench keeps what it can rebuild: exported graphs, engines, counted model statistics."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SEGBENCH_CACHE_DIR"


def cache_root() -> Path:
    """``$SEGBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/segbench``, else ``~/.cache/segbench``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "segbench"
