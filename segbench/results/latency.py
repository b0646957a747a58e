"""Latency statistics: numpy only, so reading results (reports, compare) does not import torch."""

from __future__ import annotations

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def latency_stats(samples_ms: np.ndarray | list[float]) -> dict[str, float]:
    """mean / p50 / p90 / p95 / p99 / std / min / max of latency samples in milliseconds."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.size == 0:
        raise ValueError("no latency samples")
    stats = {"mean": float(samples.mean())}
    stats.update({f"p{q}": float(np.percentile(samples, q)) for q in PERCENTILES})
    stats.update({"std": float(samples.std()), "min": float(samples.min()), "max": float(samples.max())})
    return stats
