"""Executor registry: a new executor is one new file here plus one entry in ``EXECUTORS``."""

from __future__ import annotations

from segbench.bench.executors.base import Executor
from segbench.bench.executors.inline import InlineExecutor
from segbench.bench.executors.subprocess import SubprocessExecutor
from segbench.config import BenchmarkConfig
from segbench.errors import ConfigError

EXECUTORS: dict[str, type[Executor]] = {
    executor.name: executor for executor in (InlineExecutor, SubprocessExecutor)
}


def executor_name(config: BenchmarkConfig) -> str:
    """The executor a config asks for (``executor:``; by default ``subprocess`` with
    ``isolation.subprocess``, else ``inline``)."""
    name = config.executor or ("subprocess" if config.isolation.subprocess else "inline")
    if name not in EXECUTORS:
        raise ConfigError(f"executor: unknown executor {name!r}; valid executors: {', '.join(EXECUTORS)}")
    return name


__all__ = ["EXECUTORS", "Executor", "executor_name"]
