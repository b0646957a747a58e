"""Where the stages put their records: the run's JSONL files, the summary, and whoever listens.

Each record is on disk (flushed, fsync'd) before listeners hear of it, so progress output can never be
ahead of the files. Listeners (the console progress, a test) see records and status text only; they do
not shape what is measured.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from segbench.results.jsonl import JsonlWriter
from segbench.results.layout import CAPACITY_FILE, NUMERICS_FILE, RESULTS_FILE, SENTINEL_FILE
from segbench.results.records import CapacityRecord, CellRecord, CheckRecord, SentinelReading
from segbench.results.verdicts import FAIL, INCONCLUSIVE, counts


@dataclass
class RunSummary:
    """Every record a run wrote in this session, the backends it skipped, and where it wrote them."""

    out_dir: Path
    cells: list[CellRecord] = field(default_factory=list)
    checks: list[CheckRecord] = field(default_factory=list)
    capacity: list[CapacityRecord] = field(default_factory=list)
    skipped_backends: list[dict[str, str]] = field(default_factory=list)

    @property
    def results(self) -> list[dict[str, Any]]:
        """The cells as result rows (what the terminal tables read)."""
        return [record.to_dict() for record in self.cells]

    @property
    def numerics(self) -> list[dict[str, Any]]:
        return [record.to_dict() for record in self.checks]

    @property
    def failed_cells(self) -> int:
        return sum(record.status != "ok" for record in self.cells)

    @property
    def exit_code(self) -> int:
        """1 when a cell or a check failed; else 3 when a check stayed inconclusive; else 0."""
        checks = counts(self.numerics)
        if self.failed_cells or checks[FAIL]:
            return 1
        return 3 if checks[INCONCLUSIVE] else 0


class Listener(Protocol):
    """What a run tells the outside while it goes (all optional to act on)."""

    def begin(self, total: int) -> None: ...

    def end(self) -> None: ...

    def status(self, text: str) -> None: ...

    def cell(self, record: CellRecord) -> None: ...

    def check(self, record: CheckRecord) -> None: ...

    def note(self, text: str) -> None: ...

    def advance(self) -> None: ...


class RecordSink:
    """Writes records to a run directory's files and tells the listeners."""

    def __init__(self, out_dir: Path, timing: bool, capacity: bool, listeners: list[Listener]) -> None:
        self.summary = RunSummary(out_dir)
        self.listeners = listeners
        self._stack = ExitStack()
        self._results = self._stack.enter_context(JsonlWriter(out_dir / RESULTS_FILE)) if timing else None
        self._numerics = self._stack.enter_context(JsonlWriter(out_dir / NUMERICS_FILE))
        self._capacity = self._stack.enter_context(JsonlWriter(out_dir / CAPACITY_FILE)) if capacity else None
        self._sentinel = self._stack.enter_context(JsonlWriter(out_dir / SENTINEL_FILE)) if timing else None

    def cell(self, record: CellRecord) -> None:
        if self._results is None:
            raise RuntimeError("a check-only run writes no timing cells")
        self._results.write(record.to_dict())
        self.summary.cells.append(record)
        for listener in self.listeners:
            listener.cell(record)
            listener.advance()

    def check(self, record: CheckRecord) -> None:
        self._numerics.write(record.to_dict())
        self.summary.checks.append(record)
        for listener in self.listeners:
            listener.check(record)

    def capacity(self, record: CapacityRecord) -> None:
        if self._capacity is None:
            raise RuntimeError("no sweep of this run searches batch sizes")
        self._capacity.write(record.to_dict())
        self.summary.capacity.append(record)

    def record(self, record: CellRecord | CapacityRecord) -> None:
        """A device stage's record, as an executor yields it."""
        if isinstance(record, CapacityRecord):
            self.capacity(record)
        else:
            self.cell(record)

    def reading(self, reading: SentinelReading) -> None:
        """A noise-sentinel reading (no listener needs it: compare reads the file)."""
        if self._sentinel is None:
            raise RuntimeError("a check-only run times nothing: it takes no sentinel readings")
        self._sentinel.write(reading.to_dict())

    def status(self, text: str) -> None:
        for listener in self.listeners:
            listener.status(text)

    def note(self, text: str) -> None:
        """A line worth keeping on screen (a skipped backend, a diagnosis)."""
        for listener in self.listeners:
            listener.note(text)

    def advance(self) -> None:
        """One unit of progress that wrote no cell (a check-only run's backend)."""
        for listener in self.listeners:
            listener.advance()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> RecordSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
