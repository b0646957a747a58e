"""Run directories written by hand: results.jsonl / numerics.jsonl / env.json rows shaped as
``segbench run`` writes them, for testing reports and ``segbench compare`` without running models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from segbench.results.latency import latency_stats
from segbench.results.layout import ENV_FILE, NUMERICS_FILE, RESULTS_FILE, SCHEMA_VERSION
from segbench.results.records import CellRecord, CheckRecord, Measurement, Provenance, Subject

ENV = {
    "schema": SCHEMA_VERSION,
    "config_name": "handmade",
    "config_hash": "c0ffee",
    "fingerprint": "f1f2f3f4f5f6",
    "cpu": "Test CPU",
    "cpu_cores_logical": 2,
    "python": "3.11.7",
    "packages": {"torch": "2.14.1", "onnxruntime": "1.31.1"},
    "git_sha": "0123456789abcdef",
    "git_dirty": False,
}


def cell(
    model: str = "unet",
    backend: str = "torch",
    batch: int = 1,
    size: int = 256,
    samples: list[float] | np.ndarray | None = None,
    status: str = "ok",
    precision: str = "fp32",
    device: str = "cpu",
    options: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A result row, built as the pipeline builds it; its statistics are computed from ``samples`` (ms)
    as the harness does. ``extra`` sets any other field of the row."""
    subject = Subject(
        model, "semantic", backend, options or {}, device, precision, "trained", {"num_classes": 6}
    )
    measurement = Measurement.failed("RuntimeError: out of memory", status)
    if status == "ok":
        values = [float(v) for v in (samples if samples is not None else [10.0, 10.5, 11.0, 10.2])]
        stats = latency_stats(values)
        measurement = Measurement(
            latency_ms=stats,
            throughput_ips=batch * 1000.0 / stats["mean"],
            peak_host_mb=900.0,
            samples_ms=values,
            stages_ms={"infer": {"mean": stats["mean"] * 0.9, "p50": stats["p50"] * 0.9}},
        )
    record = CellRecord(
        subject,
        height=size,
        width=size,
        batch_size=batch,
        measurement=measurement,
        env=Provenance(fingerprint=ENV["fingerprint"], git_sha=ENV["git_sha"]),
        timestamp="2026-11-21T12:00:00+00:00",
    )
    return {**record.to_dict(), **extra}


def check(
    model: str = "unet",
    backend: str = "onnxruntime",
    metric: str = "miou",
    value: float = 75.0,
    baseline: float = 75.0,
    passed: bool | None = True,
    role: str = "candidate",
    level: str = "task",
    tolerance: float | None = 0.5,
    precision: str = "fp32",
    verdict: str | None = None,
    ci: tuple[float, float] | None = None,
    images: int = 32,
    images_needed: int | None = None,
    changed: int = 0,
    paired: dict[str, Any] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A numerics row. Without ``verdict``, as rows were written before the three-valued verdict
    (``passed`` and an optional ``paired`` dict); with ``verdict`` ("pass" | "fail" | "inconclusive"),
    as they are now: ``passed`` follows the verdict (None when inconclusive), the deviation's interval
    ``ci`` (default: the deviation itself), the band, image counts, and no ``paired``."""
    delta = None if value is None or baseline is None else value - baseline
    row = {
        "model": model,
        "task": "semantic",
        "backend": backend,
        "backend_options": {},
        "device": "cpu",
        "precision": precision,
        "role": role,
        "level": level,
        "metric": metric,
        "value": value,
        "baseline": baseline,
        "delta": delta,
        "tolerance": 0.0 if role == "baseline" else tolerance,
        "bound": "max" if level == "tensor" else None,
        "passed": passed,
        "relative_floor": 0.99,
        "paired": paired,
        "error": error,
    }
    if verdict is None:
        return row  # the schema-1 layout before three-valued verdicts, as committed runs have it
    found = {key: row[key] for key in ("metric", "value", "baseline", "delta", "tolerance", "bound")}
    found.update(verdict=verdict, passed={"pass": True, "fail": False}.get(verdict), relative_floor=0.99)
    if level == "task" and role == "candidate":
        low, high = ci if ci is not None else (delta, delta)
        band_low = -tolerance if baseline is None else max(-tolerance, -(1 - 0.99) * baseline)
        found.update(
            ci_low=low,
            ci_high=high,
            confidence=0.95,
            band_low=band_low,
            band_high=tolerance,
            images=images,
            images_needed=images_needed if verdict == "inconclusive" else None,
            changed=changed,
            worst=[],
        )
    elif level == "task":  # the PyTorch baseline's own row: the images it was evaluated on
        found.update(images=images)
    subject = Subject(model, "semantic", backend, {}, "cpu", precision)
    return CheckRecord.of(subject, found, role=role, level=level, error=error).to_dict()


def write_run(
    directory: Path,
    results: list[dict[str, Any]],
    numerics: list[dict[str, Any]] = (),
    env: dict[str, Any] | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ENV_FILE).write_text(json.dumps(env if env is not None else ENV), encoding="utf-8")
    (directory / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in results), encoding="utf-8")
    (directory / NUMERICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in numerics), encoding="utf-8")
    return directory


def noisy(median: float, n: int = 40, spread: float = 0.03, seed: int = 0) -> np.ndarray:
    """``n`` latency samples around ``median`` ms with a relative spread, plus the occasional hiccup."""
    rng = np.random.default_rng(seed)
    samples = median * (1 + spread * rng.standard_normal(n))
    samples[rng.random(n) < 0.05] *= 1.5
    return np.round(samples, 4)
