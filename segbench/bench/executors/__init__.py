"""Executor registry: a new executor is one new file here plus one entry in ``EXECUTORS``."""

from __future__ import annotations

from segbench.bench.executors.base import Executor
from segbench.bench.executors.inline import InlineExecutor
from segbench.bench.executors.ray_executor import RayExecutor
from segbench.bench.executors.subprocess import SubprocessExecutor
from segbench.config import BenchmarkConfig, ExecutorConfig
from segbench.errors import ConfigError

EXECUTORS: dict[str, type[Executor]] = {
    executor.name: executor for executor in (InlineExecutor, SubprocessExecutor, RayExecutor)
}


def executor_settings(config: BenchmarkConfig) -> ExecutorConfig:
    """The ``executor:`` setting as a mapping: a bare name is ``{kind: name}``; none is ``subprocess``
    with ``isolation.subprocess``, else ``inline``."""
    if isinstance(config.executor, ExecutorConfig):
        return config.executor
    return ExecutorConfig(kind=config.executor or ("subprocess" if config.isolation.subprocess else "inline"))


def executor_name(config: BenchmarkConfig) -> str:
    """The executor a config asks for, checked against the registry."""
    name = executor_settings(config).kind
    if name not in EXECUTORS:
        raise ConfigError(f"executor: unknown executor {name!r}; valid executors: {', '.join(EXECUTORS)}")
    return name


__all__ = ["EXECUTORS", "Executor", "executor_name", "executor_settings"]
