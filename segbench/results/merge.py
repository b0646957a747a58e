"""``segbench merge``: runs of one config made separately (one per machine or cluster) as one run.

The parts must agree on the config (the same ``config_hash`` in env.json). Every row keeps the
environment it was measured in: a cell row its own ``env`` fingerprint (and host), a numerics or
capacity row the fingerprint of its part when it has none, so reports and ``compare`` can keep machines
apart. A cell (or check) that two parts measured on the same fingerprint is a duplicate and is refused:
one of them would silently hide the other. The merged env.json holds what every part agrees on, plus
each part's whole environment under ``parts``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segbench.errors import RunFileError, SegbenchError
from segbench.results.jsonl import JsonlWriter, read_jsonl, write_json
from segbench.results.layout import CAPACITY_FILE, ENV_FILE, NUMERICS_FILE, RESULTS_FILE, read_env
from segbench.results.records import CellRecord, CheckRecord, Provenance


class MergeError(SegbenchError):
    """Runs that cannot be merged (another config, a duplicate cell, not a run): one line, exit 2."""


@dataclass(frozen=True)
class MergeSummary:
    out_dir: Path
    parts: int
    cells: int
    checks: int
    fingerprints: tuple[str, ...]


def _env(run: Path) -> dict[str, Any]:
    if not run.is_dir():
        raise MergeError(f"{run}: no such run directory")
    try:
        env = read_env(run)
    except RunFileError as exc:
        raise MergeError(str(exc)) from None
    if env is None:
        raise MergeError(f"{run}: no {ENV_FILE}: not a segbench run")
    return env


def _rows(run: Path, name: str) -> list[dict[str, Any]]:
    path = run / name
    if not path.exists():
        return []
    try:
        return read_jsonl(path)
    except (OSError, ValueError) as exc:
        raise MergeError(f"cannot read {path}: {exc}") from None


def _with_part_env(row: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """A row that names no environment (numerics rows, older rows) gets its part's fingerprint."""
    if (row.get("env") or {}).get("fingerprint"):
        return row
    part = Provenance(env.get("fingerprint"), env.get("config_hash"), env.get("git_sha"))
    return {**row, "env": part.to_dict()}


def _cell_key(row: dict[str, Any]) -> tuple:
    record = CellRecord.from_dict(row)
    return (*record.subject.key(), record.cell, record.repeat, record.env.fingerprint)


def _check_key(row: dict[str, Any]) -> tuple:
    record = CheckRecord.from_dict(row)
    return (*record.subject.key(), record.role, record.level, record.metric, row["env"].get("fingerprint"))


def _capacity_key(row: dict[str, Any]) -> tuple:
    return (row.get("model"), row.get("backend"), json.dumps(row.get("backend_options"), sort_keys=True),
            row.get("device"), row.get("precision"), row.get("height"), row.get("width"),
            row["env"].get("fingerprint"))  # fmt: skip


def _describe(key: tuple, what: str) -> str:
    model, backend, _, device, precision, *rest = key
    detail = " ".join(str(part) for part in rest[:-1] if part is not None)
    return f"{what} {model} {backend}/{device}/{precision} {detail} on fingerprint {key[-1]}".rstrip()


def _joined(parts: Sequence[tuple[Path, dict[str, Any], list]], key: Any, what: str) -> list[dict[str, Any]]:
    """Every part's rows, in part order; a key two parts share is refused with both names."""
    seen: dict[tuple, Path] = {}
    out = []
    for run, env, rows in parts:
        for row in rows:
            row = _with_part_env(row, env)
            found = key(row)
            if found in seen and seen[found] != run:
                raise MergeError(f"duplicate {_describe(found, what)}: in both {seen[found]} and {run}")
            seen.setdefault(found, run)
            out.append(row)
    return out


def merged_env(envs: Sequence[dict[str, Any]], runs: Sequence[Path]) -> dict[str, Any]:
    """What every part agrees on (config, schema; the machine too when it is one), and each part's own
    environment under ``parts`` (with the run it came from)."""
    first = envs[0]
    common = {k: v for k, v in first.items() if k != "nodes" and all(e.get(k) == v for e in envs[1:])}
    parts = [{**env, "run": str(run)} for env, run in zip(envs, runs, strict=True)]
    return {**common, "merged_from": [str(run) for run in runs], "parts": parts}


def merge_runs(runs: Sequence[Path], out_dir: Path) -> MergeSummary:
    """Join ``runs`` into ``out_dir`` (which must not hold results yet)."""
    if len(runs) < 2:
        raise MergeError("merge needs at least two run directories")
    runs = [Path(run) for run in runs]
    envs = [_env(run) for run in runs]
    hashes = {env.get("config_hash") for env in envs}
    if len(hashes) != 1 or None in hashes:
        found = ", ".join(f"{run}: {env.get('config_hash')}" for run, env in zip(runs, envs, strict=True))
        raise MergeError(f"the runs' configs differ (config_hash {found}): only runs of one config merge")
    schemas = {env.get("schema", 1) for env in envs}
    if len(schemas) != 1:
        raise MergeError(f"the runs have different results schemas ({sorted(schemas)})")
    out_dir = Path(out_dir)
    for name in (RESULTS_FILE, NUMERICS_FILE, CAPACITY_FILE, ENV_FILE):
        if (out_dir / name).exists():
            raise MergeError(f"{out_dir / name} already exists: choose another --out")
    tables = {}
    for name, key, what in ((RESULTS_FILE, _cell_key, "cell"), (NUMERICS_FILE, _check_key, "check"),
                            (CAPACITY_FILE, _capacity_key, "capacity row")):  # fmt: skip
        parts = [(run, env, _rows(run, name)) for run, env in zip(runs, envs, strict=True)]
        tables[name] = _joined(parts, key, what)
    if not tables[RESULTS_FILE] and not tables[NUMERICS_FILE]:
        raise MergeError("the runs hold no results to merge")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        if rows or name != CAPACITY_FILE:
            with JsonlWriter(out_dir / name) as writer:
                for row in rows:
                    writer.write(row)
    write_json(out_dir / ENV_FILE, merged_env(envs, runs))
    fingerprints = {(row.get("env") or {}).get("fingerprint") for row in tables[RESULTS_FILE]}
    return MergeSummary(out_dir, len(runs), len(tables[RESULTS_FILE]), len(tables[NUMERICS_FILE]),
                        tuple(sorted(f for f in fingerprints if f)))  # fmt: skip
