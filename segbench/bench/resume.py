"""What an interrupted run already wrote, so ``segbench run --resume`` skips it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.errors import ConfigError, RunFileError
from segbench.results.jsonl import read_jsonl, truncate_torn_tail
from segbench.results.layout import ENV_FILE, NUMERICS_FILE, RESULTS_FILE, read_env
from segbench.results.records import BASELINE, CellRecord, CheckRecord
from segbench.sweep import Cell

if TYPE_CHECKING:
    from segbench.backends import BackendConfig
    from segbench.config import ModelEntry


def _key(model: str, backend: BackendConfig, precision: str) -> tuple[str, ...]:
    return model, backend.name, json.dumps(backend.variant(), sort_keys=True), backend.device, precision


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
        try:
            env = read_env(out_dir)
        except RunFileError as exc:
            raise ConfigError(f"cannot resume: {exc}") from None
        if env is None:
            raise ConfigError(f"cannot resume: {out_dir / ENV_FILE} is missing")
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
                cell = CellRecord.from_dict(row)
                done.cells.add((*cell.subject.key(), cell.cell, cell.repeat))
        if (out_dir / NUMERICS_FILE).exists():
            for row in read_jsonl(out_dir / NUMERICS_FILE):
                check = CheckRecord.from_dict(row)
                if check.role == BASELINE:
                    done.baselines.add(check.subject.model)
                elif check.closes_check:
                    done.checks.add(check.subject.key())
        return done

    def has_cell(
        self, entry: ModelEntry, backend: BackendConfig, precision: str, cell: Cell, repeat: int = 0
    ) -> bool:
        size = (cell.height, cell.width, cell.batch)
        return (*_key(entry.name, backend, precision), size, repeat) in self.cells

    def checked(self, entry: ModelEntry, backend: BackendConfig, precision: str) -> bool:
        return _key(entry.name, backend, precision) in self.checks
