"""Where segbench keeps what it can rebuild (exported graphs, engines, counted model statistics), and how
an entry is keyed."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CACHE_ENV = "SEGBENCH_CACHE_DIR"


def cache_root() -> Path:
    """``$SEGBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/segbench``, else ``~/.cache/segbench``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "segbench"


def cache_key(fields: Mapping[str, Any] | Sequence[Any]) -> str:
    """A short stable hash of ``fields`` (JSON with sorted keys; tuples and lists hash alike)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]
