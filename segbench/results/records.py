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

    # env.json's fingerprint: 12 hex digits hashing what makes numbers comparable (CPU and GPU models,
    # driver, CUDA, cuDNN, TensorRT, library versions, segbench's commit) of the machine that measured it
    fingerprint: str | None = None
    config_hash: str | None = None  # 16 hex digits of the config's SHA-256 (executor left out)
    git_sha: str | None = None  # segbench's git commit (HEAD of its checkout); None outside git
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

    model: str  # the model entry's name: a registered model, or a module: / onnx: entry's label
    task: str  # semantic | instance | panoptic, or none (an onnx: graph checked on tensors only)
    backend: str  # the backend entry's name: torch | onnxruntime | tensorrt (or a plugin's)
    # The backend entry's options that differ from their defaults (``BackendConfig.variant()``): what
    # tells two entries of one backend apart.
    backend_options: dict[str, Any]
    device: str  # cpu | cuda
    precision: str  # fp32 | fp16 | bf16
    weights: str | None = None  # the model entry's weights: random, trained or a file path
    # The options the model was built with: the entry's own, plus for a registered model those its
    # checkpoint records and, with random weights, the dataset's class count.
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
    # End-to-end time of one iteration (preprocess + infer + postprocess of one batch), ms: mean, p50,
    # p90, p95, p99, std, min and max over the timed iterations.
    latency_ms: dict[str, float] | None = None
    throughput_ips: float | None = None  # images per second: batch x iterations over the loop's wall time
    peak_host_mb: float | None = None  # the process's peak resident memory (RSS) during the cell, MiB
    # The framework's own peak (torch allocator, + TensorRT's activation memory), and the process's and
    # the whole device's as NVML sees them (sampled), the same way for every backend.
    peak_device_mb: float | None = None
    # MiB this process held on the GPU (NVML, sampled); None on the CPU or where NVML cannot attribute it.
    peak_device_nvml_process_mb: float | None = None
    peak_device_nvml_device_mb: float | None = None  # MiB in use on the whole GPU, by any process (NVML)
    # Per stage, mean and p50 in ms: preprocess, infer, postprocess, and the parts of infer the runner
    # timed itself (h2d, compute, run_host, d2h).
    stages_ms: dict[str, dict[str, float]] | None = None
    # The compute stage alone, timed with CUDA events (torch, TensorRT), ms: latency_ms's statistics;
    # None where no device events timed it.
    compute_ms: dict[str, float] | None = None
    warmup: int | None = None  # untimed warm-up iterations run
    iterations: int | None = None  # timed iterations
    first_iteration_ms: float | None = None  # first warm-up iteration, ms: cold for a runner's first cell
    samples_ms: list[float] = field(default_factory=list)  # every timed iteration's end-to-end time, ms
    backend_info: dict[str, Any] = field(default_factory=dict)  # what really ran (``Runner.describe()``)

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
    height: int  # input height, pixels
    width: int  # input width, pixels
    batch_size: int  # images per batch
    measurement: Measurement
    repeat: int = 0  # the timing pass, from 0 (``timing.repeats``)
    env: Provenance = field(default_factory=Provenance)  # the run and machine it came from: the env.* keys
    timestamp: str = field(default_factory=now)  # when the row was made: UTC, ISO 8601, to the second
    cold_start: dict[str, Any] | None = None  # export_s / activate_s of the runner this cell opened
    artifact: dict[str, Any] | None = None  # the graph or engine that ran, with its parity
    params: int | None = None  # the model's parameter count
    gflops: float | None = None  # GFLOPs of one image's forward at this size (a multiply-add is 2 FLOPs)
    # The model's FLOPs x batch over the cell's compute time, and that over the run's measured matmul
    # peak of the cell's device and precision (env.json ``peak_tflops``); None in rows written before.
    achieved_tflops: float | None = None
    # achieved_tflops over the measured peak the cell is judged against (env.json ``peak_tflops``): a fraction
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
    # The task metric (miou, bbox_ap, pq...), ``tensors (<headline check>)`` at level tensor,
    # ``fp16 diagnosis``, or ``model`` when the model could not be built.
    metric: str
    role: str = CANDIDATE  # candidate (a backend against the baseline) | baseline (its own metric)
    level: str = TASK  # task | tensor | diagnosis
    value: float | None = None  # the metric in points (percent); tensor: the headline check's value
    baseline: float | None = None  # the baseline's metric in points; None at levels tensor and diagnosis
    delta: float | None = None  # value - baseline, points
    tolerance: float | None = None  # the allowed |delta| in points; tensor: the headline check's limit
    verdict: str | None = None  # pass | fail | inconclusive; None for a diagnosis
    passed: bool | None = None  # True on pass, False on fail, None otherwise (readers of schema 1)
    error: str | None = None  # why the check could not run (one line; the traceback is in the run log)
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
    height: int  # input height, pixels
    width: int  # input width, pixels
    max_batch: int  # the largest batch (images) that ran end to end; 0 when none did
    limit: int  # the largest batch the search would try: sweep.max_batch_limit, or the runner's own limit
    limit_reached: bool  # every batch tried ran, up to ``limit``: no failure ended the search
    fails_at: int | None = None  # the smallest batch that failed (images); None when the limit was reached
    error: str | None = None  # why ``fails_at`` failed
    env: Provenance = field(default_factory=Provenance)  # the run and machine it came from: the env.* keys
    timestamp: str = field(default_factory=now)  # when the row was made: UTC, ISO 8601, to the second
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

    device: str  # cpu | cuda
    # What was timed, e.g. ``fp32 matmul 384^2 x6, 2 threads``: readings of two workloads never compare.
    workload: str
    label: str  # where in the run, e.g. ``before pass 2``
    time: float  # wall-clock end of the reading, seconds since the epoch
    samples_ms: list[float]  # each timed run of the workload, ms (after a few untimed warm-up runs)
    repeat: int | None = None  # the timing pass (from 0) that starts right after it; None after the last
    host: str | None = None  # the host name of the machine that read it

    @property
    def median_ms(self) -> float:
        """The median of ``samples_ms``, ms: the reading's one number."""
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
