"""The diagnosis stage: after a failed reduced-precision check of a segbench fp16 graph, the layers
where it first diverges from the fp32 graph, and which to keep in fp32 (a row at level ``diagnosis``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from segbench.backends.base import GraphBackendConfig
from segbench.bench.context import ModelState, RunContext, RunnerPool, export_graph
from segbench.bench.plan import Unit
from segbench.export.fp16_diagnosis import diagnose_precision
from segbench.results.records import DIAGNOSIS, CheckRecord


def diagnose(ctx: RunContext, state: ModelState, unit: Unit, pool: RunnerPool) -> None:
    """Runs when the numerics stage left a failed check's raw batches on the pool."""
    raw = pool.failed_check_outputs
    if not raw:
        return
    feeds: dict[str, np.ndarray] = raw[0]["feeds"]
    input_name = state.built.input_names[0]
    images = feeds[input_name]
    _, opened = pool.get(images.shape[2:])
    artifact = opened.get("artifact") or {}
    if artifact.get("precision") != "fp16" or artifact.get("user_artifact"):
        return  # only segbench's own fp16 graphs have an fp32 twin to compare layer by layer
    ctx.sink.status(f"{unit.where} · locating fp16 divergence")
    size = tuple(artifact["static_size"]) if artifact.get("static_size") else None
    subject = state.subject(unit.backend, unit.precision)
    row: dict[str, Any] = {"metric": "fp16 diagnosis", "value": None, "baseline": None, "delta": None,
                           "tolerance": None, "passed": None}  # fmt: skip
    try:
        assert isinstance(unit.backend, GraphBackendConfig)  # only segbench's own graphs get here
        fp32 = export_graph(ctx, state, unit.backend, size, "fp32")
        found = diagnose_precision(fp32.path, artifact["path"], {input_name: images[:1]}, top=5)
    except Exception as exc:  # a diagnosis is a help: its failure must not hide the verdicts
        error = ctx.log.failure(f"{unit.where}: fp16 diagnosis", exc)
        ctx.sink.check(CheckRecord.of(subject, row, level=DIAGNOSIS, error=error))
        return
    summary = found.to_dict()
    summary.pop("layers", None)  # every layer of a large graph: too much for a results row
    first = found.first_divergent
    if first is not None:
        ctx.sink.note(
            f"{unit.where}: first divergent layer {first.node} ({first.op_type}, max rel err "
            f"{first.max_rel_err:.3g}); keep in fp32: {', '.join(found.suggest_fp32) or '-'}"
        )
    ctx.sink.check(CheckRecord.of(subject, {**row, "diagnosis": summary}, level=DIAGNOSIS))
