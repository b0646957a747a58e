"""Typed records of a run: what a timing cell, a numerics verdict and a capacity search wrote.

Each record turns into one JSONL row (``to_dict``) and back (``from_dict``), with the field names the
committed runs use, so reports, ``compare`` and ``--resume`` read old runs and new ones alike. The
pipeline builds records, the sinks write them, the readers (resume, reports) parse them: no other module
spells a row's keys.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any

from segbench.results.verdicts import FAIL

CANDIDATE, BASELINE = "candidate", "baseline"  # a numerics row's role
TASK, TENSOR, DIAGNOSIS = "task", "tensor", "diagnosis"  # a numerics row's level


def now() -> str:
    """The timestamp every record carries: UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Provenance:
    """Where and from what a record came (a row's ``env``): compare tells machines and versions apart."""

    fingerprint: str | None = None
    config_hash: str | None = None
    git_sha: str | None = None
    host: str | None = None  # the node that measured it (a cluster run); rows without it read as None

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        if row["host"] is None:  # single-machine rows keep their earlier shape
            del row["host"]
        return row

    @classmethod
    def from_dict(cls, env: dict[str, Any] | None) -> Provenance:
        env = env or {}
        return cls(**{f.name: env.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Subject:
    """What ran: one model entry on one backend entry at one precision."""

    model: str
    task: str
    backend: str
    backend_options: dict[str, Any]
    device: str
    precision: str
    weights: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)

    def key(self) -> tuple[str, str, str, str, str]:
        """Model, backend, its options (canonical text), device, precision: what resume matches on."""
        return (self.model, self.backend, json.dumps(self.backend_options, sort_keys=True), self.device,
                self.precision)  # fmt: skip

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Subject:
        return cls(
            model=row["model"],
            task=row.get("task") or "",
            backend=row["backend"],
            backend_options=row.get("backend_options") or {},
            device=row["device"],
            precision=row["precision"],
            weights=row.get("weights"),
            model_options=row.get("model_options") or {},
        )

    def _model_fields(self) -> dict[str, Any]:
        return {"model": self.model, "task": self.task, "weights": self.weights,
                "model_options": self.model_options}  # fmt: skip

    def _backend_fields(self) -> dict[str, Any]:
        return {"backend": self.backend, "backend_options": self.backend_options, "device": self.device,
                "precision": self.precision}  # fmt: skip


@dataclass(frozen=True)
class Measurement:
    """A cell's timing and memory; ``status`` other than ``ok`` leaves the numbers None."""

    status: str = "ok"  # ok | failed | timeout | crashed
    error: str | None = None  # one line; the full traceback is in the run log
    latency_ms: dict[str, float] | None = None
    throughput_ips: float | None = None
    peak_host_mb: float | None = None
    # The framework's own peak (torch allocator, + TensorRT's activation memory), and the process's and
    # the whole device's as NVML sees them (sampled), the same way for every backend.
    peak_device_mb: float | None = None
    peak_device_nvml_process_mb: float | None = None
    peak_device_nvml_device_mb: float | None = None
    stages_ms: dict[str, dict[str, float]] | None = None
    compute_ms: dict[str, float] | None = None
    warmup: int | None = None
    iterations: int | None = None
    first_iteration_ms: float | None = None
    samples_ms: list[float] = field(default_factory=list)
    backend_info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, error: str | None, status: str = "failed") -> Measurement:
        return cls(status=status, error=error)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


_MEASUREMENT_FIELDS = tuple(f.name for f in fields(Measurement))


@dataclass(frozen=True)
class CellRecord:
    """One timing cell (model x backend x precision x input size x batch) in one pass."""

    subject: Subject
    height: int
    width: int
    batch_size: int
    measurement: Measurement
    repeat: int = 0
    env: Provenance = field(default_factory=Provenance)
    timestamp: str = field(default_factory=now)
    cold_start: dict[str, Any] | None = None  # export_s / activate_s of the runner this cell opened
    artifact: dict[str, Any] | None = None  # the graph or engine that ran, with its parity
    params: int | None = None
    gflops: float | None = None
    # The model's FLOPs x batch over the cell's compute time, and that over the run's measured matmul
    # peak of the cell's device and precision (env.json ``peak_tflops``); None in rows written before.
    achieved_tflops: float | None = None
    peak_fraction: float | None = None
    # Which time the FLOP rate divides by: "compute" (device events), "run_host" (the forward's host wall
    # time around a device run: onnxruntime's), "end_to_end" (a host backend's whole pipeline).
    flops_time: str | None = None
    isolated: bool | None = None  # measured in a child process (isolation.subprocess)

    @property
    def status(self) -> str:
        return self.measurement.status

    @property
    def cell(self) -> tuple[int, int, int]:
        return self.height, self.width, self.batch_size

    def to_dict(self) -> dict[str, Any]:
        row = {
            **self.subject._model_fields(),
            **self.subject._backend_fields(),
            "batch_size": self.batch_size,
            "height": self.height,
            "width": self.width,
            "env": self.env.to_dict(),
            "timestamp": self.timestamp,
            "repeat": self.repeat,
            **asdict(self.measurement),
            "cold_start": self.cold_start,
            "artifact": self.artifact,
            "params": self.params,
            "gflops": self.gflops,
        }
        # Written only when set: the FLOP rates where measured (a failed cell's row, and rows written
        # before them, have none), ``isolated`` by a cell measured in a child.
        for key in ("achieved_tflops", "peak_fraction", "flops_time", "isolated"):
            if getattr(self, key) is not None:
                row[key] = getattr(self, key)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> CellRecord:
        env = row.get("env") or {}
        return cls(
            subject=Subject.from_dict(row),
            height=int(row["height"]),
            width=int(row["width"]),
            batch_size=int(row["batch_size"]),
            measurement=Measurement(**{k: row[k] for k in _MEASUREMENT_FIELDS if row.get(k) is not None}),
            repeat=int(row.get("repeat") or 0),
            env=Provenance.from_dict(env),
            timestamp=row.get("timestamp") or "",
            cold_start=row.get("cold_start"),
            artifact=row.get("artifact"),
            params=row.get("params"),
            gflops=row.get("gflops"),
            achieved_tflops=row.get("achieved_tflops"),
            peak_fraction=row.get("peak_fraction"),
            flops_time=row.get("flops_time"),
            isolated=row.get("isolated"),
        )

    def stamped(self, env: Provenance, **changes: Any) -> CellRecord:
        """This record with the parent run's provenance (a child process's cell joins the parent's run)."""
        return replace(self, env=env, **changes)


# The fields every numerics row has; a level's own fields (the interval, the tensor checks, the
# diagnosis) travel in ``CheckRecord.details``.
_CHECK_FIELDS = ("metric", "value", "baseline", "delta", "tolerance", "verdict", "passed")


@dataclass(frozen=True)
class CheckRecord:
    """One numerics verdict: a task metric, the tensor-level check, or a diagnosis, against the
    PyTorch fp32 baseline (``role`` candidate), or the baseline's own metric (``role`` baseline)."""

    subject: Subject
    metric: str
    role: str = CANDIDATE
    level: str = TASK
    value: float | None = None
    baseline: float | None = None
    delta: float | None = None
    tolerance: float | None = None
    verdict: str | None = None  # pass | fail | inconclusive; None for a diagnosis
    passed: bool | None = None  # True on pass, False on fail, None otherwise (readers of schema 1)
    error: str | None = None
    # Level-specific fields, written flat: the band, interval and image counts of a task verdict, the
    # ``tensors`` of a tensor check, the ``diagnosis`` of a diagnosis.
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        subject: Subject,
        found: dict[str, Any],
        role: str = CANDIDATE,
        level: str = TASK,
        error: str | None = None,
    ) -> CheckRecord:
        """A record from a verdict's fields (``MetricVerdict.to_dict()``, ``tensor_row``, ...)."""
        common: dict[str, Any] = {key: found.get(key) for key in _CHECK_FIELDS}  # values as read
        details = {key: value for key, value in found.items() if key not in _CHECK_FIELDS}
        return cls(subject=subject, role=role, level=level, error=error, details=details, **common)

    @classmethod
    def failed(cls, subject: Subject, metric: str, error: str | None, **found: Any) -> CheckRecord:
        """A check that could not run (export, session or model failure): it fails, with the reason."""
        values = {"value": None, "baseline": None, "delta": None, "tolerance": None, **found}
        return cls.of(subject, {"metric": metric, **values, "verdict": FAIL, "passed": False}, error=error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.subject.model,
            "task": self.subject.task,
            **self.subject._backend_fields(),
            "role": self.role,
            "level": self.level,
            "metric": self.metric,
            "value": self.value,
            "baseline": self.baseline,
            "delta": self.delta,
            "tolerance": self.tolerance,
            "verdict": self.verdict,
            **self.details,
            "passed": self.passed,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> CheckRecord:
        known = {"model", "task", "backend", "backend_options", "device", "precision", "role", "level",
                 "error", *_CHECK_FIELDS}  # fmt: skip
        common: dict[str, Any] = {key: row.get(key) for key in _CHECK_FIELDS}
        return cls(
            subject=Subject.from_dict(row),
            role=row.get("role", CANDIDATE),
            level=row.get("level", TASK),
            error=row.get("error"),
            details={key: value for key, value in row.items() if key not in known},
            **common,
        )

    @property
    def closes_check(self) -> bool:
        """Whether this row is a candidate check's last: the tensor row, or an error row of a check
        that could not run. Resume counts a check as done once one is on disk."""
        return self.role == CANDIDATE and (self.level == TENSOR or self.error is not None)


@dataclass(frozen=True)
class CapacityRecord:
    """The largest batch one full pipeline run fits at one input size (``sweep.find_max_batch``)."""

    subject: Subject
    height: int
    width: int
    max_batch: int
    limit: int  # the largest batch the search would try: sweep.max_batch_limit, or the runner's own limit
    limit_reached: bool
    fails_at: int | None = None
    error: str | None = None  # why ``fails_at`` failed
    env: Provenance = field(default_factory=Provenance)
    timestamp: str = field(default_factory=now)
    # Whose limit ``limit`` is: "max_batch_limit", or the runner's reason (e.g. an engine profile's
    # max batch), which stops the search without a failure.
    stopped_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.subject._model_fields(),
            **self.subject._backend_fields(),
            "height": self.height,
            "width": self.width,
            "max_batch": self.max_batch,
            "limit": self.limit,
            "limit_reached": self.limit_reached,
            "fails_at": self.fails_at,
            "error": self.error,
            "stopped_by": self.stopped_by,
            "env": self.env.to_dict(),
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True)
class SentinelReading:
    """One reading of the noise sentinel: the fixed reference workload of ``device`` timed ``len(samples_ms)``
    times, ending at wall-clock ``time`` (seconds since the epoch), ``label`` saying where in the run
    (``before pass 2``, ``after pass 5``, ``before head pass 3``...) and ``repeat`` the timing pass that
    starts right after it (None for the reading that closes the last pass). A pass is bracketed by its
    own reading and the next one in time."""

    device: str
    workload: str
    label: str
    time: float
    samples_ms: list[float]
    repeat: int | None = None
    host: str | None = None

    @property
    def median_ms(self) -> float:
        ordered = sorted(self.samples_ms)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "median_ms": self.median_ms}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> SentinelReading:
        return cls(
            device=str(row["device"]),
            workload=str(row.get("workload") or ""),
            label=str(row.get("label") or ""),
            time=float(row["time"]),
            samples_ms=[float(v) for v in row["samples_ms"]],
            repeat=None if row.get("repeat") is None else int(row["repeat"]),
            host=row.get("host"),
        )
