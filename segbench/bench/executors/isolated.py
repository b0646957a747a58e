"""Each timing cell in its own child ``segbench run`` (the local executor with ``isolation.subprocess``):
a crash (segfault, abort, a CUDA error that poisons the context) or a hang fails that cell only. Costs a
process start and a model load per cell. The child's log joins the parent's, so its traceback is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from segbench.bench.context import ModelState, RunContext, RunnerPool
from segbench.bench.peak import PEAKS_ENV
from segbench.bench.plan import Cell, Unit
from segbench.bench.stages.timing import cell_record
from segbench.results.jsonl import read_jsonl
from segbench.results.layout import LOG_FILE, RESULTS_FILE
from segbench.results.records import CellRecord, Measurement


def isolated_cells(
    ctx: RunContext, state: ModelState, unit: Unit, pool: RunnerPool
) -> Iterator[CellRecord]:
    """The timing stage with each cell in a child process (the local executor's ``isolation.subprocess``);
    ``pool`` is unused: the child opens its own runner."""
    for cell in unit.cells:
        ctx.sink.status(f"{unit.where} · {cell} (isolated)")
        yield _run_cell(ctx, state, unit, cell)


def _cell_config(ctx: RunContext, state: ModelState, unit: Unit) -> dict[str, Any]:
    """The run's config narrowed to the unit's model, backend entry and precision, one pass, no
    numerics; the unit's whole sweep stays, so an engine's profile covers the grid as
    inline (the child times its one cell: ``--only-cell``)."""
    data = ctx.config.model_dump(mode="json", exclude={"isolation", "executor"})
    data["timing"]["repeats"] = 1  # the parent runs the passes, one child per cell and pass
    entry = state.entry.model_dump(mode="json")
    if entry["timing"] is not None:
        entry["timing"]["repeats"] = 1
    backend = {**unit.backend.model_dump(mode="json"), "precisions": [unit.precision], "model": None}
    data.update(models=[entry], backends=[backend], numerics={**data["numerics"], "enabled": False})
    return data


def _run_cell(ctx: RunContext, state: ModelState, unit: Unit, cell: Cell) -> CellRecord:
    log, where = ctx.log, f"{unit.where} {cell} (isolated)"
    timeout = ctx.config.isolation.timeout_s
    with tempfile.TemporaryDirectory(prefix="segbench-cell-") as tmp:
        config_path, out = Path(tmp) / "cell.yaml", Path(tmp) / "out"
        config_path.write_text(yaml.safe_dump(_cell_config(ctx, state, unit)), encoding="utf-8")
        argv = [
            sys.executable,
            "-m",
            "segbench",
            "run",
            str(config_path),
            "--out",
            str(out),
            "--no-report",
            "--only-cell",
            *map(str, (cell.height, cell.width, cell.batch)),
        ]
        env = {**os.environ, PEAKS_ENV: json.dumps(ctx.peak_tflops)}
        try:
            child = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                                   env=env)  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            log.block(f"{where} timed out after {timeout:g} s; its stderr", _text(exc.stderr))
            failed = Measurement.failed(f"cell timed out after {timeout:g} s", status="timeout")
            return cell_record(ctx, state, unit, cell, failed)
        child_log = (out / LOG_FILE).read_text(encoding="utf-8") if (out / LOG_FILE).exists() else ""
        if child_log.strip():  # the child's failures, with their tracebacks
            log.block(f"{where}: the child's log", child_log)
        rows = read_jsonl(out / RESULTS_FILE) if (out / RESULTS_FILE).exists() else []
    if rows:
        return CellRecord.from_dict(rows[0]).stamped(ctx.provenance, isolated=True)
    log.block(f"{where}: the child exited with code {child.returncode}; its stderr", child.stderr)
    lines = [line for line in child.stderr.strip().splitlines() if line.strip()]
    why = lines[-1] if lines else "no output"
    error = f"cell process exited with code {child.returncode}: {why}"
    return cell_record(ctx, state, unit, cell, Measurement.failed(error, status="crashed"))


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""
