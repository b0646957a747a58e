"""The files of a run directory and the version of their row layout: the one place that names them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segbench.errors import RunFileError

RESULTS_FILE = "results.jsonl"  # one row per timing cell and pass
NUMERICS_FILE = "numerics.jsonl"  # one row per numerics verdict (task, tensor, diagnosis), baselines too
CAPACITY_FILE = "capacity.jsonl"  # one row per model x backend x size when the sweep searches batches
ENV_FILE = "env.json"  # the machine, the software and the config the run used
# One row per reading of the noise sentinel (a fixed reference workload timed before, between and after
# the units): how fast the machine itself was while the cells ran.
SENTINEL_FILE = "sentinel.jsonl"
LOG_FILE = "segbench.log"  # the run log: every failed cell's full traceback

# The layout of the rows above, stored in env.json as "schema" (absent means 1). Bump it when a field
# the reports read changes meaning; readers refuse a schema they do not know.
SCHEMA_VERSION = 1


def read_env(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``env.json`` (None when the run has none); one that cannot be read, or is not a JSON
    object, is a :class:`RunFileError` naming the file."""
    path = Path(run_dir) / ENV_FILE
    if not path.exists():
        return None
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFileError(f"{path} is unreadable: {exc}") from None
    if not isinstance(env, dict):
        raise RunFileError(f"{path} is not a JSON object: not a segbench env file")
    return env
