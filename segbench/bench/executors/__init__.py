"""Executor registry: a new executor is one new file here plus one entry in ``EXECUTORS``."""

from __future__ import annotations

from segbench.bench.executors.base import Executor
from segbench.bench.executors.inline import InlineExecutor
from segbench.bench.executors.subprocess import SubprocessExecutor
from segbench.config import BenchmarkConfig

EXECUTORS: dict[str, type[Executor]] = {
    executor.name: executor for executor in (InlineExecutor, SubprocessExecutor)
}


def executor_name(config: BenchmarkConfig) -> str:
    """The executor a config asks for: ``isolation.subprocess`` runs each cell in a child process."""
    return "subprocess" if config.isolation.subprocess else "inline"


__all__ = ["EXECUTORS", "Executor", "executor_name"]
