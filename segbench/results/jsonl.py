"""Append-only JSONL result files: each record is written, flushed and fsync'd as soon as it exists,
so a crash or a kill never loses a finished cell."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from segbench.files import atomic_write_text


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf: write them as null rather than emitting invalid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class JsonlWriter:
    """Appends one JSON record per line; each is flushed and fsync'd before ``write`` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(_clean(record), allow_nan=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a JSONL file; a torn last line (from a kill mid-write) is ignored."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ValueError(f"{path}: line {number} is not valid JSON: {exc.msg}") from None
    return records


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    atomic_write_text(path, json.dumps(_clean(data), indent=2, allow_nan=False) + "\n")


def truncate_torn_tail(path: Path) -> bool:
    """Cut a last line left incomplete by a kill mid-write, so records appended later stay valid JSONL.
    Returns whether anything was cut."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    with path.open("r+b") as handle:
        handle.truncate(data.rfind(b"\n") + 1)
        handle.flush()
        os.fsync(handle.fileno())
    return True
