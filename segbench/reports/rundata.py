"""A finished (or interrupted) run directory read back as pandas tables.

``segbench report`` and ``segbench compare`` both start here. Reading checks that the directory is a
segbench run this version understands: the files exist, the schema version is known, and every row has
the fields the reports use. Anything else is bad input (one error line, exit 2), never a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segbench.errors import RunFileError, SegbenchError
from segbench.reports.tables import backend_label
from segbench.results.jsonl import read_jsonl
from segbench.results.latency import latency_stats
from segbench.results.layout import NUMERICS_FILE, RESULTS_FILE, SCHEMA_VERSION, SENTINEL_FILE, read_env
from segbench.results.records import CellRecord
from segbench.results.verdicts import band_of, images_of, interval_of, verdict_of

# What identifies a cell across runs (compare matches on it) and how a row is shown.
CELL_KEY = (
    "model",
    "model_options",
    "backend",
    "backend_options",
    "device",
    "precision",
    "height",
    "width",
    "batch_size",
)
CHECK_KEY = ("model", "backend", "backend_options", "device", "precision", "level", "metric")

REQUIRED_RESULT_FIELDS = frozenset(
    {"model", "backend", "backend_options", "device", "precision", "height", "width", "batch_size", "status"}
)
REQUIRED_NUMERICS_FIELDS = frozenset(
    {"model", "backend", "backend_options", "device", "precision", "role", "metric", "value", "passed"}
)
REQUIRED_SENTINEL_FIELDS = frozenset({"device", "time", "samples_ms"})
# Flattened latency statistics, milliseconds, over every timed iteration.
LATENCY_STATS = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")
# run_host: a forward timed on the host (onnxruntime), kept apart from compute (CUDA events).
STAGES = ("preprocess", "infer", "postprocess", "h2d", "compute", "run_host", "d2h")
PEAK_MEMORY = ("peak_host_mb", "peak_device_mb", "peak_device_nvml_process_mb", "peak_device_nvml_device_mb")
# Achieved TFLOP/s (the model's FLOPs over the cell's compute time) and its share of the run's peak.
EFFICIENCY = ("achieved_tflops", "peak_fraction")
MEASUREMENTS = (
    *(f"{stat}_ms" for stat in LATENCY_STATS),
    "throughput_ips",
    *PEAK_MEMORY,
    *(f"{stage}_p50_ms" for stage in STAGES),
    "first_iteration_ms",
    "gflops",
    *EFFICIENCY,
)


class RunDataError(SegbenchError):
    """A run directory that cannot be reported on or compared: missing, unreadable or another schema."""


def options_text(options: dict[str, Any] | None) -> str:
    """Options as canonical JSON, so equal option sets compare equal as strings (and fit a CSV cell)."""
    return json.dumps(options or {}, sort_keys=True)


def _labels(frame: pd.DataFrame) -> list[str]:
    return [
        backend_label({"backend": name, "backend_options": json.loads(options)})
        for name, options in zip(frame["backend"], frame["backend_options"], strict=True)
    ]


def _cell_row(row: dict[str, Any]) -> dict[str, Any]:
    """A results row flattened for a table, read through its typed record."""
    record = CellRecord.from_dict(row)
    subject, measured = record.subject, record.measurement
    latency = measured.latency_ms or {}
    stages = measured.stages_ms or {}
    flat: dict[str, Any] = {
        "model": subject.model,
        "model_options": options_text(subject.model_options),
        "weights": subject.weights,
        "task": subject.task or None,
        "backend": subject.backend,
        "backend_options": options_text(subject.backend_options),
        "device": subject.device,
        "precision": subject.precision,
        "height": record.height,
        "width": record.width,
        "batch_size": record.batch_size,
        "status": measured.status,
        "error": measured.error,
    }
    flat.update({f"{stat}_ms": latency.get(stat) for stat in LATENCY_STATS})
    flat["throughput_ips"] = measured.throughput_ips
    flat.update({key: getattr(measured, key) for key in PEAK_MEMORY})
    flat.update({f"{stage}_p50_ms": (stages.get(stage) or {}).get("p50") for stage in STAGES})
    flat.update(
        first_iteration_ms=measured.first_iteration_ms,
        warmup=measured.warmup,
        iterations=measured.iterations,
        params=record.params,
        gflops=record.gflops,
        # Missing (NaN) in rows written before they were recorded: shown as "-", never recomputed.
        achieved_tflops=record.achieved_tflops,
        peak_fraction=record.peak_fraction,
        artifact=record.artifact,
        fingerprint=record.env.fingerprint,
        git_sha=record.env.git_sha,
        timestamp=record.timestamp or None,
        samples_ms=[float(v) for v in measured.samples_ms or ()],
    )
    return flat


def _pool_repeats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell measured in several passes (``timing.repeats``): the samples of every pass pooled into one
    set of statistics, plus each pass's p50 (``repeat_p50_ms``) and sample count (``repeat_sizes``), in
    pass order, so compare can judge the passes one by one. A pass that
    failed makes the cell failed: a partial measurement is not reported as a whole one."""
    first = rows[0]
    failed = next((row for row in rows if row["status"] != "ok"), None)
    if failed is not None:
        return {
            **failed,
            **{key: first[key] for key in CELL_KEY},
            "repeats": len(rows),
            "repeat_p50_ms": [],
            "repeat_sizes": [],
        }
    samples = [value for row in rows for value in row["samples_ms"]]
    pooled = {**first, "samples_ms": samples, "repeats": len(rows)}
    pooled["repeat_p50_ms"] = [row["p50_ms"] for row in rows]
    pooled["repeat_sizes"] = [len(row["samples_ms"]) for row in rows]
    if samples:
        pooled.update({f"{stat}_ms": value for stat, value in latency_stats(samples).items()})
        pooled["throughput_ips"] = first["batch_size"] * 1000.0 / pooled["mean_ms"]
    for column in PEAK_MEMORY:
        values = [row[column] for row in rows if row[column] is not None]
        pooled[column] = max(values) if values else None
    for stage in STAGES:
        values = [row[f"{stage}_p50_ms"] for row in rows if row[f"{stage}_p50_ms"] is not None]
        pooled[f"{stage}_p50_ms"] = float(np.median(values)) if values else None
    for column in EFFICIENCY:  # as the stage p50s: the median pass
        values = [row[column] for row in rows if row[column] is not None]
        pooled[column] = float(np.median(values)) if values else None
    pooled["iterations"] = sum(row["iterations"] or 0 for row in rows)
    return pooled


def _cell_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell and machine, in first-measured order; the passes of a repeated cell pooled. A
    merged or cluster run keeps each machine's measurement of a cell apart (its fingerprint)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        row = _cell_row(record)
        groups.setdefault((*(row[key] for key in CELL_KEY), row["fingerprint"]), []).append(row)
    return [
        _pool_repeats(rows)
        if len(rows) > 1
        else {
            **rows[0],
            "repeats": 1,
            "repeat_p50_ms": [rows[0]["p50_ms"]],
            "repeat_sizes": [len(rows[0]["samples_ms"])],
        }
        for rows in groups.values()
    ]


def _check_row(record: dict[str, Any]) -> dict[str, Any]:
    """One numerics row, new or old: ``verdict`` (pass | fail | inconclusive; None for a diagnosis),
    the deviation's interval ``ci_low``/``ci_high``, the band and the image counts, read from an old row's
    ``passed`` and ``paired`` where it predates them (see :mod:`segbench.results.verdicts`)."""
    (ci_low, ci_high), (band_low, band_high) = interval_of(record), band_of(record)
    images, images_needed, changed = images_of(record)
    return {
        "model": record["model"],
        "task": record.get("task"),
        "backend": record["backend"],
        "backend_options": options_text(record["backend_options"]),
        "device": record["device"],
        "precision": record["precision"],
        "role": record["role"],
        "level": record.get("level", "task"),
        "metric": record["metric"],
        "value": record["value"],
        "baseline": record.get("baseline"),
        "delta": record.get("delta"),
        "tolerance": record.get("tolerance"),
        "bound": record.get("bound"),
        "relative_floor": record.get("relative_floor"),
        "passed": record["passed"],
        "verdict": verdict_of(record),
        "ci_low": ci_low,
        "ci_high": ci_high,
        "confidence": record.get("confidence"),
        "band_low": band_low,
        "band_high": band_high,
        "images": images,
        "images_needed": images_needed,
        "changed": changed,
        "error": record.get("error"),
    }


def _columns(kind: str) -> list[str]:
    # The column order of an empty table, so an empty run still gives files with a header.
    sample: dict[str, object] = {name: 0 for name in REQUIRED_RESULT_FIELDS | REQUIRED_NUMERICS_FIELDS}
    sample.update(backend_options={}, model_options={})
    return list((_cell_row if kind == "cells" else _check_row)(sample))


def cells_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per benchmark cell: its key, status, flattened latency statistics (ms), throughput,
    memory, per-stage p50s and the raw ``samples_ms``; the passes of a repeated run pooled (``repeats``,
    ``repeat_p50_ms``, ``repeat_sizes``). Failed cells keep NaN measurements."""
    columns = [*_columns("cells"), "repeats", "repeat_p50_ms", "repeat_sizes"]
    frame = pd.DataFrame(_cell_rows(records), columns=columns)
    # Measurements as floats: a failed cell's missing values become NaN, never 0 or a Python None.
    for column in MEASUREMENTS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["backend_label"] = _labels(frame)
    frame["size"] = [f"{h}x{w}" for h, w in zip(frame["height"], frame["width"], strict=True)]
    return frame


def checks_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per numerics verdict (task, tensor and diagnosis levels, baselines included)."""
    frame = pd.DataFrame([_check_row(r) for r in records], columns=_columns("checks"))
    # Counts as nullable integers: a row without them is <NA>, never a float or a 0.
    for column in ("images", "images_needed", "changed"):
        frame[column] = frame[column].astype("Int64")
    frame["backend_label"] = _labels(frame)
    return frame


@dataclass
class RunData:
    """A run directory's env.json, results.jsonl, numerics.jsonl and sentinel.jsonl, raw and as tables."""

    path: Path
    env: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    numerics: list[dict[str, Any]] = field(default_factory=list)
    sentinel: list[dict[str, Any]] = field(default_factory=list)  # none in runs written before it

    # Built once: a report reads them for every table, plot and summary line.
    @cached_property
    def cells(self) -> pd.DataFrame:
        return cells_frame(self.results)

    @cached_property
    def checks(self) -> pd.DataFrame:
        return checks_frame(self.numerics)

    @property
    def schema(self) -> int:
        return int(self.env.get("schema", 1))


def _read_rows(path: Path, required: frozenset[str]) -> list[dict[str, Any]]:
    try:
        rows = read_jsonl(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDataError(f"cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise RunDataError(str(exc)) from None
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise RunDataError(f"{path}: line {number} is not a JSON object: not a segbench results file")
        missing = sorted(required - row.keys())
        if missing:
            raise RunDataError(
                f"{path}: line {number} lacks {', '.join(missing)}: not a segbench results file "
                f"(schema {SCHEMA_VERSION})"
            )
    return rows


def load_run(directory: Path) -> RunData:
    """Read a run directory; raises :class:`RunDataError` naming the problem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RunDataError(f"{directory}: no such run directory")
    results_path = directory / RESULTS_FILE
    numerics_path = directory / NUMERICS_FILE
    if not results_path.exists() and not numerics_path.exists():
        raise RunDataError(f"{directory}: neither {RESULTS_FILE} nor {NUMERICS_FILE} is there: not a run")
    try:
        env = read_env(directory) or {}
    except RunFileError as exc:
        raise RunDataError(str(exc)) from None
    schema = env.get("schema", 1)
    if schema != SCHEMA_VERSION:
        raise RunDataError(
            f"{directory} has results schema {schema}; this segbench reads schema {SCHEMA_VERSION}"
        )
    results = _read_rows(results_path, REQUIRED_RESULT_FIELDS) if results_path.exists() else []
    numerics = _read_rows(numerics_path, REQUIRED_NUMERICS_FIELDS) if numerics_path.exists() else []
    sentinel_path = directory / SENTINEL_FILE
    sentinel = _read_rows(sentinel_path, REQUIRED_SENTINEL_FIELDS) if sentinel_path.exists() else []
    return RunData(path=directory, env=env, results=results, numerics=numerics, sentinel=sentinel)
