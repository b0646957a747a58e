"""What an interrupted run already wrote, so ``segbench run --resume`` skips it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.errors import ConfigError
from segbench.results.jsonl import read_jsonl, truncate_torn_tail

if TYPE_CHECKING:
    from segbench.backends import BackendConfig
    from segbench.config import ModelEntry

# The files of a run directory (segbench.bench.run writes them).
RESULTS_FILE = "results.jsonl"
NUMERICS_FILE = "numerics.jsonl"
ENV_FILE = "env.json"


def _backend_key(name: str, options: dict[str, Any], device: str) -> tuple[str, str, str]:
    return name, json.dumps(options, sort_keys=True), device


@dataclass
class FinishedWork:
    """What an interrupted run already wrote: its cells, its numerics checks, its baselines.

    Every record is on disk (flushed and fsync'd) the moment it exists, so after a crash or a kill -9
    the files hold every finished cell; a record torn by the kill is cut off before appending.
    """

    cells: set[tuple] = field(default_factory=set)
    checks: set[tuple] = field(default_factory=set)
    baselines: set[str] = field(default_factory=set)
    env: dict[str, Any] | None = None

    @classmethod
    def load(cls, out_dir: Path, current_hash: str) -> FinishedWork:
        env_path = out_dir / ENV_FILE
        try:
            env = json.loads(env_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ConfigError(f"cannot resume: {env_path} is missing or unreadable") from None
        if env.get("config_hash") != current_hash:
            raise ConfigError(
                f"cannot resume {out_dir}: the config changed since that run (config hash "
                f"{env.get('config_hash')} there, {current_hash} now); use another --out"
            )
        done = cls(env=env)
        for path in (out_dir / RESULTS_FILE, out_dir / NUMERICS_FILE):
            if path.exists():
                truncate_torn_tail(path)
        if (out_dir / RESULTS_FILE).exists():
            for row in read_jsonl(out_dir / RESULTS_FILE):
                key = _backend_key(row["backend"], row["backend_options"], row["device"])
                cell = (row["height"], row["width"], row["batch_size"])
                done.cells.add((row["model"], key, row["precision"], cell, row.get("repeat", 0)))
        if (out_dir / NUMERICS_FILE).exists():
            for row in read_jsonl(out_dir / NUMERICS_FILE):
                if row["role"] == "baseline":
                    done.baselines.add(row["model"])
                    continue
                # The tensor-level row is a check's last verdict; a failed check writes error rows.
                if row.get("level") == "tensor" or row.get("error") is not None:
                    key = _backend_key(row["backend"], row["backend_options"], row["device"])
                    done.checks.add((row["model"], key, row["precision"]))
        return done

    def has_cell(
        self, entry: ModelEntry, backend: BackendConfig, precision: str, cell: tuple, repeat: int = 0
    ) -> bool:
        key = _backend_key(backend.name, backend.variant(), backend.device)
        return (entry.name, key, precision, tuple(cell), repeat) in self.cells

    def checked(self, entry: ModelEntry, backend: BackendConfig, precision: str) -> bool:
        key = _backend_key(backend.name, backend.variant(), backend.device)
        return (entry.name, key, precision) in self.checks
