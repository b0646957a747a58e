"""Whether the machine stayed the same while two measurements were taken: the noise sentinel and the
hardware identity, read by ``compare`` and ``ab`` before they judge a latency.

- **Disturbed.** The sentinel (``segbench.bench.sentinel``) times a fixed workload before each timing pass
  and after the last. A pass's *level* is the median of the two readings that bracket it. Two timings are
  comparable when the machine ran the workload at the same speed around both: when the two levels differ
  by more than ``bound``, the comparison is *disturbed* and gets no performance verdict. On the 2-core CI
  VM, readings 0.5-1 s apart differ by up to 14% on a quiet machine (median 2.5%) and the level rises by
  +126% while one busy process shares the CPUs (``reports/sentinel/``, ``scripts/sentinel_noise.py``):
  hence the default bound of 15%.
- **Machine changed.** Latencies measured on two machines (another CPU model or core count, GPU model,
  driver or power limit) are not compared at all.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from segbench.env import machine_identity
from segbench.results.records import SentinelReading

DEFAULT_BOUND = 0.25


def spread(levels: Iterable[float]) -> float:
    """How far apart levels are: the largest over the smallest, minus one (0 for one level)."""
    values = [v for v in levels if v is not None]
    return max(values) / min(values) - 1 if len(values) > 1 and min(values) > 0 else 0.0


@dataclass(frozen=True)
class PassLevels:
    """One run's sentinel levels: ``{(device, workload): {pass: level_ms}}``."""

    levels: dict[tuple[str, str], dict[int, float]]

    @classmethod
    def of(cls, rows: Sequence[dict[str, Any]]) -> PassLevels:
        """From a run's sentinel rows (``RunData.sentinel``)."""
        readings = [SentinelReading.from_dict(row) for row in rows]
        levels: dict[tuple[str, str], dict[int, float]] = {}
        streams: dict[tuple[str, str], list[SentinelReading]] = {}
        for reading in readings:
            streams.setdefault((reading.device, reading.workload), []).append(reading)
        for key, stream in streams.items():
            stream.sort(key=lambda r: r.time)
            for index, reading in enumerate(stream):
                if reading.repeat is None:
                    continue
                bracket = [reading.median_ms, *(r.median_ms for r in stream[index + 1 : index + 2])]
                levels.setdefault(key, {})[reading.repeat] = statistics.median(bracket)
        return cls(levels)

    def __bool__(self) -> bool:
        return bool(self.levels)

    def level(self, device: str, repeat: int, workload: str | None = None) -> tuple[str, float] | None:
        """The level of pass ``repeat`` as read on ``device`` (its CPU readings where the device has none),
        with the workload it belongs to."""
        for wanted in (device, "cpu"):
            for (found, name), passes in self.levels.items():
                if found == wanted and (workload is None or name == workload) and repeat in passes:
                    return name, passes[repeat]
        return None


def sentinel_move(
    baseline: PassLevels, current: PassLevels, device: str, passes: tuple[int, int]
) -> float | None:
    """How much slower (+) or faster (-) the machine ran the sentinel around the current run's pass
    ``passes[1]`` than around the baseline's pass ``passes[0]``, for a cell on ``device``; None when a
    run has no readings there (nothing to judge by). A comparison whose move is past the bound either
    way is disturbed (see :func:`spread`)."""
    before = baseline.level(device, passes[0])
    if before is None:
        return None
    after = current.level(device, passes[1], workload=before[0])
    return None if after is None else after[1] / before[1] - 1


def disturbed(move: float | None, bound: float) -> bool:
    """A move past ``bound`` in either direction: slower is ``1 + bound``, faster ``1 / (1 + bound)``."""
    return move is not None and spread([1.0, 1.0 + move]) > bound


def machine_changes(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The hardware fields that differ between two runs' environments (every machine a run names: a
    merged or cluster run's parts and nodes too), as ``field: a -> b``. A field that one run did not
    record (an older env.json) is not a difference."""
    before, after = _identities(baseline), _identities(current)
    if not before or not after:  # a run without an environment: nothing to tell them apart by
        return []
    recorded = {key for identity in before + after for key in identity}
    recorded = {key for key in recorded if all(identity.get(key) is not None for identity in before + after)}
    before = [{k: v for k, v in identity.items() if k in recorded} for identity in before]
    after = [{k: v for k, v in identity.items() if k in recorded} for identity in after]
    if len(before) == len(after) == 1:
        (a,), (b,) = before, after
        return [f"{key}: {a[key]} -> {b[key]}" for key in a if a[key] != b[key]]
    if sorted(map(str, before)) == sorted(map(str, after)):
        return []
    return [f"machines: {_names(before)} -> {_names(after)}"]


def _identities(env: Mapping[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for part in (env, *(env.get("parts") or ())):
        for each in (part, *(part.get("nodes") or ())):
            identity = machine_identity(each)
            if any(value is not None for value in identity.values()) and identity not in found:
                found.append(identity)
    return found


def _names(identities: list[dict[str, Any]]) -> str:
    return "; ".join(", ".join(f"{k} {v}" for k, v in identity.items()) for identity in identities)
