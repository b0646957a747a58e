"""Executor registry: a new executor is one new file here plus one entry in ``EXECUTORS``."""

from __future__ import annotations

from segbench.bench.executors.base import (
    DeviceEvent,
    Executor,
    Passes,
    UnitDone,
    executor_settings,
    registry_name,
)
from segbench.bench.executors.local import LocalExecutor
from segbench.bench.executors.ray_executor import RayExecutor
from segbench.config import BenchmarkConfig
from segbench.errors import ConfigError

EXECUTORS: dict[str, type[Executor]] = {executor.name: executor for executor in (LocalExecutor, RayExecutor)}


def executor_name(config: BenchmarkConfig) -> str:
    """The registry name of the executor a config asks for (``inline`` and ``subprocess``, the names
    from before isolation became the local executor's option, are ``local``); unknown is bad input."""
    settings = executor_settings(config)
    name = registry_name(settings)
    if name not in EXECUTORS:
        valid = ", ".join(EXECUTORS)
        raise ConfigError(f"executor: unknown executor {settings.kind!r}; valid executors: {valid}")
    return name


def make_executor(config: BenchmarkConfig) -> Executor:
    return EXECUTORS[executor_name(config)](config)


__all__ = ["EXECUTORS", "DeviceEvent", "Executor", "Passes", "UnitDone", "executor_name", "executor_settings",
           "make_executor"]  # fmt: skip
