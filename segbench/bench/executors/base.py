"""Where a run's device stages run. An executor takes the units of a run and runs their device stages
(the timing cells, and the largest-batch search where the plan asks for it) where the device is: in
this process, one child process per cell, or on the machines of a Ray cluster. It yields each record
as it exists and, once a unit's device work is over, a :class:`UnitDone`; the pipeline writes the
records and runs the driver stages (numerics, diagnosis) of each finished unit.

A new executor is one new file here plus one entry in ``segbench.bench.executors.EXECUTORS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from segbench.bench.context import RunContext
from segbench.bench.plan import Unit
from segbench.bench.workspace import Workspace
from segbench.config import BenchmarkConfig, ExecutorConfig
from segbench.results.records import CapacityRecord, CellRecord

# Executor names from before isolation became the local executor's option: still read in configs.
LEGACY_KINDS = {"inline": False, "subprocess": True}  # name -> isolated
LOCAL = "local"


@dataclass(frozen=True)
class UnitDone:
    """A unit's device stages are over: its driver stages may run."""

    unit: Unit


DeviceEvent = CellRecord | CapacityRecord | UnitDone


class Passes(Protocol):
    """The pipeline's hooks around the timing passes an executor times in this process (the noise
    sentinel's readings, ``segbench ab``'s gate). An executor whose cells are timed elsewhere calls
    neither: what this machine does then says nothing of those cells."""

    def opening(self, repeat: int) -> None: ...

    def closed(self) -> None: ...


class Executor(ABC):
    name: ClassVar[str]

    def __init__(self, config: BenchmarkConfig) -> None:
        self.config = config
        self.settings = executor_settings(config)

    def open(self, units: Sequence[Unit]) -> None:
        """Take what the units' device work needs (a cluster connection) before the run writes anything,
        so a failure here is bad input (a ConfigError) and leaves no half-made run directory."""
        return None

    @abstractmethod
    def run(
        self, ctx: RunContext, units: Sequence[Unit], workspace: Workspace, passes: Passes
    ) -> Generator[DeviceEvent, None, None]:
        """Each unit's device records (a failed cell is a record too, never an exception), in any order,
        and a :class:`UnitDone` for every unit once its device work is over. An executor measuring in
        this process opens the unit's runners from ``workspace`` and yields its UnitDone while they are
        still open, so the driver stages reuse them."""

    def close(self) -> None:
        """Release what :meth:`open` took; called once, when the run ends."""
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def executor_settings(config: BenchmarkConfig) -> ExecutorConfig:
    """The ``executor:`` setting as a mapping: a bare name is ``{kind: name}``, none is ``local``."""
    if isinstance(config.executor, ExecutorConfig):
        return config.executor
    return ExecutorConfig(kind=config.executor or LOCAL)


def registry_name(settings: ExecutorConfig) -> str:
    """The registry entry behind a kind (``inline`` and ``subprocess`` are the local executor)."""
    return LOCAL if settings.kind in LEGACY_KINDS else settings.kind


def isolated(config: BenchmarkConfig) -> bool:
    """Whether each timing cell runs in its own child process (``isolation.subprocess``, or the old
    ``executor: subprocess``)."""
    return config.isolation.subprocess or LEGACY_KINDS.get(executor_settings(config).kind, False)
