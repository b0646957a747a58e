"""Executor registry: a new executor is one new file here plus one entry in ``EXECUTORS``."""

from __future__ import annotations

from segbench.bench.executors.base import Executor, executor_settings
from segbench.bench.executors.inline import InlineExecutor
from segbench.bench.executors.ray_executor import RayExecutor
from segbench.bench.executors.subprocess import SubprocessExecutor
from segbench.config import BenchmarkConfig
from segbench.errors import ConfigError

EXECUTORS: dict[str, type[Executor]] = {
    executor.name: executor for executor in (InlineExecutor, SubprocessExecutor, RayExecutor)
}


def executor_name(config: BenchmarkConfig) -> str:
    """The executor a config asks for, checked against the registry."""
    name = executor_settings(config).kind
    if name not in EXECUTORS:
        raise ConfigError(f"executor: unknown executor {name!r}; valid executors: {', '.join(EXECUTORS)}")
    return name


__all__ = ["EXECUTORS", "Executor", "executor_name", "executor_settings"]
